# Two commands on a fresh machine with Python 3.11 and pip: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first, pinned, so pip never pulls a multi-GB CUDA build; override for your own build.
TORCH_SPEC ?= torch==2.13.0
OUT ?= out
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: install test demo perf lint clean

$(BIN)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[test,figures]"
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q -n 2 tests

demo: install
	bash scripts/demo.sh "$(BIN)" "$(OUT)"
	bash scripts/demo_sr.sh "$(BIN)" "$(OUT)"

# Speed measurements (ratios against reference runs in the same process); not part of the tests.
perf: install
	$(BIN)/python perf/render.py
	$(BIN)/python perf/render_phases.py
	$(BIN)/python perf/build.py
	$(BIN)/python perf/cityscapes_build.py
	$(BIN)/python perf/stereo.py
	$(BIN)/python perf/loader.py
	$(BIN)/python perf/train.py

# ruff (configured in pyproject.toml): pyflakes, pycodestyle, import order; fails on any finding.
lint: install
	$(BIN)/ruff check bsrdata models cli tests perf scripts

clean:
	rm -rf $(OUT) .numba_cache
