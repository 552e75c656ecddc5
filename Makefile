# lmforge: `make demo` runs the whole pipeline on the embedded corpus; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of PyTorch lies on this machine's disk (pip's find-links), so installing it first
# means CI never downloads a multi-GB CUDA build. On a GPU machine, install your CUDA torch first
# (or run `make setup TORCH=torch`) and lmforge's `torch>=2.4` range keeps it.
TORCH ?= torch==2.13.0

.PHONY: setup setup-test demo test test-clone lint bench clean

# `make demo` installs what `lmforge run` needs (lmforge and its curate extra); `make test` adds the
# rest (every extra, lm-eval, selenium, tensorboard, ...), which a first demo should not wait for.
setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

# pip's byte-compilation of every module it installs (torch's 2,300 Python files included) took a third
# of the demo's install time (103 s -> 65 s without it, 2026-12-05); the demo instead compiles what
# `lmforge run` imports (the bytecode is written even where PYTHONDONTWRITEBYTECODE is set, so later
# runs start fast), and `make test`, whose processes import far more of torch, compiles the rest on
# every core.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet --no-compile "$(TORCH)"
	$(PY) -m pip install --quiet --no-compile -e ".[curate]"
	env -u PYTHONDONTWRITEBYTECODE $(PY) -c "import lmforge.cli, lmforge.pipeline"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	# (torch ships a few files for newer Pythons that do not compile here; pip skips them too)
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import os, torch; print(os.path.dirname(torch.__file__))')" || true
	touch $@

demo: setup
	$(VENV)/bin/lmforge run

test: setup-test
	$(PY) -m pytest -q tests

# Style as CI checks it: ruff's lint rules plus the 110-column line length, and ruff format's layout.
lint: setup-test
	$(VENV)/bin/ruff check lmforge tests bench scripts
	$(VENV)/bin/ruff format --check lmforge tests bench scripts

# The tests a clone without ../shared runs differently, with the project's shared data hidden: those
# that reach it (through tests/conftest.py) and those that once read it directly.
test-clone: setup-test
	LMFORGE_HIDE_SHARED=1 $(PY) -m pytest -q $$(grep -l "from conftest import" tests/test_*.py) \
		tests/test_cli.py tests/test_curate_dedup.py tests/test_eval_data.py tests/test_eval_cli.py

bench: setup
	$(PY) bench/train_throughput.py --n-layer 6 --n-embd 384 --n-head 6 --block-size 256 \
		--batch-size 8 --vocab-size 4096 --dtype fp32 $(if $(wildcard ../nanoGPT/model.py),--nanogpt ../nanoGPT,)

clean:
	rm -rf $(VENV) build *.egg-info
