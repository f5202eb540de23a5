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

# our modules' bytecode, written ahead: an environment with PYTHONDONTWRITEBYTECODE=1 (this machine's,
# many containers') never writes it on import, so every command would compile the package's sources
# again (0.06 s of `cluster-sim --version`, 0.1-0.15 s of the headline run); Python still reads what is
# written here, and skips a file changed since (compiling it then, as without)
COMPILED := $(VENV)/.compiled
$(COMPILED): $(STAMP) $(shell find cluster_sim -name '*.py')
	$(BIN)/python -m compileall -q cluster_sim
	touch $(COMPILED)

setup: $(COMPILED)

scenario-800vm: $(COMPILED)
	$(BIN)/cluster-sim run scenarios/800vm-8node.yaml --out results/800vm-8node

test: $(COMPILED)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

soak: $(COMPILED)
	HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest -q tests/test_properties.py

bench: $(COMPILED)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/scale_bench.py
	$(BIN)/python benchmarks/sweep_bench.py

golden: $(COMPILED)
	$(BIN)/python tests/golden_results.py

golden-check: $(COMPILED)
	CLUSTER_SIM_HUGE=1 $(BIN)/python -m pytest -q tests/test_golden.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf results .pytest_cache
