# make demo: the main job on built-in data; make test: the test suite. Both set up .venv first.
PY := .venv/bin/python
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test lint install mcu-tools
MCU_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm

install: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

demo: install
	.venv/bin/edgekit demo

test: install mcu-tools
	$(PY) -m pytest -q

# The MCU tests build firmware and run it on QEMU: as root on a Debian-like machine lacking the
# packages, install them (the tests skip, saying why, where they stay missing).
mcu-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! dpkg -s $(MCU_PACKAGES) >/dev/null 2>&1; then \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends $(MCU_PACKAGES)) || \
	  echo "could not install $(MCU_PACKAGES): the MCU tests will skip"; fi

lint: install
	.venv/bin/ruff check edgekit converters targets firmware_bridge tests examples benchmarks
