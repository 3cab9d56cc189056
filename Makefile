# Two commands do all set-up on a fresh machine:
#   make demo   -- create the venv, install, run the smoke suite on the embedded synthetic world,
#                  write its report and check it against the committed regression baseline
#   make test   -- create the venv, install, run the test suite
# and, when wanted: make upgrade (backbone-upgrade stitching matrix: DiffUp, HSNet, prototype on the
# zoo), make kshot (k-shot sensitivity suite, ~9 min on 2 CPU cores), make bench
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo upgrade kshot test bench clean

$(BIN)/fssbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/fssbench

demo: setup
	$(BIN)/fssbench run suites/smoke.yaml
	$(BIN)/fssbench report results/smoke
	$(BIN)/fssbench regress results/smoke --baseline results/baselines/smoke.json

upgrade: setup
	$(BIN)/fssbench run suites/backbone_upgrade.yaml
	$(BIN)/fssbench report results/backbone_upgrade

kshot: setup
	$(BIN)/fssbench run suites/kshot.yaml
	$(BIN)/fssbench report results/kshot

test: setup
	$(BIN)/pytest -n 2

bench: setup
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-only

clean:
	rm -rf $(VENV) data/synth results/smoke reports/smoke results/kshot reports/kshot results/backbone_upgrade reports/backbone_upgrade
