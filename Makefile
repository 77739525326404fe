# Developer entry points. `make demo` sets up .venv and runs the main job; `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
# PyTorch for the optional nn extra; the pinned CPU build keeps CI off multi-GB CUDA wheels.
# Elsewhere: make TORCH_SPEC="torch" (or any spec) to pick your own build.
TORCH_SPEC ?= torch==2.13.0

BIN := $(VENV)/bin

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,nn,fast]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

.PHONY: setup demo test bench
setup: $(VENV)/.installed

demo: setup
	$(BIN)/savic simulate --config configs/quickstart.toml --out results/quickstart

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks cpu
