# lmforge: `make demo` runs the whole pipeline on the embedded corpus; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of PyTorch lies on this machine's disk (pip's find-links), so installing it first
# means CI never downloads a multi-GB CUDA build. On a GPU machine, install your CUDA torch first
# (or run `make setup TORCH=torch`) and lmforge's `torch>=2.4` range keeps it.
TORCH ?= torch==2.13.0

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/lmforge run

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) bench/train_throughput.py --n-layer 6 --n-embd 384 --n-head 6 --block-size 256 \
		--batch-size 8 --vocab-size 4096 --dtype fp32 $(if $(wildcard ../nanoGPT/model.py),--nanogpt ../nanoGPT,)

clean:
	rm -rf $(VENV) build *.egg-info
