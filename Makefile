# One command each: `make demo` sets everything up and runs the demo; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mdmonitor-installed

.PHONY: setup demo test

# torch is pinned to the CPU build first, and the package is installed without build
# isolation, so that nothing pulls a CUDA build of torch.
$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-build-isolation -e ".[test]"
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/mdmonitor demo

test: setup
	$(BIN)/python -m pytest tests
