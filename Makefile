# Two commands do all set-up on a fresh machine:
#   make demo   -- create the venv, install, run the backbone-upgrade suite (DiffUp, HSNet and prototype,
#                  every zoo backbone trained x evaluated) on the embedded synthetic world, write its
#                  report and check it against the committed regression baseline
#   make test   -- create the venv, install, run the test suite
# and, when wanted: make smoke (prototype / HSNet / HM, the CI suite), make kshot (k-shot
# sensitivity suite), make ci (what .ci/run runs after the tests), make bench
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup demo smoke gate kshot test bench clean

$(BIN)/fssbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/fssbench

demo: setup
	$(BIN)/fssbench run suites/backbone_upgrade.yaml
	$(BIN)/fssbench report results/backbone_upgrade
	$(BIN)/fssbench regress results/backbone_upgrade --baseline results/baselines/backbone_upgrade.json

smoke: setup
	$(BIN)/fssbench run suites/smoke.yaml
	$(BIN)/fssbench report results/smoke
	$(BIN)/fssbench regress results/smoke --baseline results/baselines/smoke.json

# the regression gates CI runs after the tests: the smoke suite and the DiffUp cells. Their
# baselines were made on CPUs, so the gates (and the tests) run on the CPU even where CUDA is
# visible (`auto` means $FSSBENCH_DEVICE when set; the setting reaches `smoke` as gate's prerequisite)
gate: export FSSBENCH_DEVICE = cpu
gate: smoke
	$(BIN)/fssbench run suites/backbone_upgrade.yaml --profile ci --results-dir results/backbone_upgrade_ci
	$(BIN)/fssbench report results/backbone_upgrade_ci
	$(BIN)/fssbench regress results/backbone_upgrade_ci --baseline results/baselines/backbone_upgrade_ci.json

kshot: setup
	$(BIN)/fssbench run suites/kshot.yaml
	$(BIN)/fssbench report results/kshot

test: export FSSBENCH_DEVICE = cpu
test: setup
	$(BIN)/pytest -n 2

bench: setup
	$(BIN)/pytest tests/benchmarks --benchmark-enable --benchmark-only

clean:
	rm -rf $(VENV) data/synth results/smoke reports/smoke results/kshot reports/kshot results/backbone_upgrade reports/backbone_upgrade results/backbone_upgrade_ci reports/backbone_upgrade_ci
