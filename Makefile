# Developer entry points. `make demo` sets up .venv and runs the main job; `make test` runs the tests.
PYTHON ?= python3.11
VENV   ?= .venv
# PyTorch for the optional nn extra. CI's pip takes this pin as a CPU build from a local wheel
# folder; on plain PyPI the same pin is the default build (on Linux, with CUDA: several GB).
# A CPU-only build elsewhere: make setup TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu";
# another version: make setup TORCH_SPEC="torch>=2.4".
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

BIN := $(VENV)/bin

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
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
