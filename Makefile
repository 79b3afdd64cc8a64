# make demo: the main job on built-in data; make test: the test suite. Both set up .venv first.
PY := .venv/bin/python
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test lint install

install: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

demo: install
	.venv/bin/edgekit demo

test: install
	$(PY) -m pytest -q

lint: install
	.venv/bin/ruff check edgekit converters targets firmware_bridge tests examples benchmarks
