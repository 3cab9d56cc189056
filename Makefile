# Two commands do all set-up on a fresh machine:
#   make demo   -- create the venv, install, run the main job on the embedded synthetic world
#   make test   -- create the venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DATA   ?= data/synth

.PHONY: setup demo test bench clean

$(BIN)/fssbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/fssbench

$(DATA)/synth.json: | $(BIN)/fssbench
	$(BIN)/fssbench synth --out $(DATA) --seed 0 --force

demo: setup $(DATA)/synth.json
	$(BIN)/fssbench data check $(DATA) --dataset pascal --shots 5
	$(BIN)/fssbench episodes export --dataset pascal --root $(DATA) --fold 0 --shot 1 --episodes 1000 --seed 0 --out results/episodes/synth_fold0_1shot.json

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-only

clean:
	rm -rf $(VENV) $(DATA) results/episodes
