# cluster_sim: every target sets up .venv itself, so a fresh clone needs nothing else.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# test processes side by side (pytest-xdist, one test file each at a time): one per core of the
# 2-core reference machine; TEST_WORKERS=0 runs the suite in this process, one test after another
TEST_WORKERS ?= 2

.PHONY: setup scenario-800vm test soak bench lint golden golden-check clean

# (setup.py and the .pyx files: the compiled modules are built by the install, again when they change)
$(STAMP): pyproject.toml setup.py cluster_sim/cluster/_latency.pyx cluster_sim/kernel/fluid/_routes.pyx \
		cluster_sim/kernel/fluid/_sums.pyx
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

scenario-800vm: $(STAMP)
	$(BIN)/cluster-sim run scenarios/800vm-8node.yaml --out results/800vm-8node

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

soak: $(STAMP)
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -q tests/test_properties.py

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/scale_bench.py
	$(BIN)/python benchmarks/sweep_bench.py

golden: $(STAMP)
	$(BIN)/python tests/golden_results.py

golden-check: $(STAMP)
	CLUSTER_SIM_HUGE=1 $(BIN)/python -m pytest -q tests/test_golden.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf results .pytest_cache
