# make demo: the main job on built-in data; make test: the test suite. Both set up .venv first.
PY := .venv/bin/python
export NUMBA_CACHE_DIR ?= $(CURDIR)/.numba_cache

.PHONY: demo test lint install mcu-tools speech-tools
MCU_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SPEECH_PACKAGES := espeak-ng sox

install: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all,dev]'
	touch $@

demo: install speech-tools
	.venv/bin/edgekit demo
	.venv/bin/edgekit demo --asr

test: install mcu-tools speech-tools
	$(PY) -m pytest -q

# The MCU tests build firmware and run it on QEMU: as root on a Debian-like machine lacking the
# packages, install them (the tests skip, saying why, where they stay missing).
mcu-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! dpkg -s $(MCU_PACKAGES) >/dev/null 2>&1; then \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends $(MCU_PACKAGES)) || \
	  echo "could not install $(MCU_PACKAGES): the MCU tests will skip"; fi

# edgekit.speech synthesizes its corpus with espeak-ng and sox: installed the same way.
speech-tools:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    ! dpkg -s $(SPEECH_PACKAGES) >/dev/null 2>&1; then \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends $(SPEECH_PACKAGES)) || \
	  echo "could not install $(SPEECH_PACKAGES): the speech tests will skip"; fi

lint: install
	.venv/bin/ruff check edgekit converters targets firmware_bridge tests examples benchmarks
