# The two commands of the README. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
# The web page tests drive Debian's Chromium (tests/test_web.py); apt installs it once.
BROWSER := /usr/bin/chromium /usr/bin/chromedriver
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
APT     := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: demo test bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(BROWSER) &:
	$(APT) update -q
	$(APT) install -y -q --no-install-recommends chromium chromium-driver

browser: $(BROWSER)

demo: $(STAMP)
	$(VENV)/bin/shmcam demo

test: $(STAMP) $(BROWSER)
	$(VENV)/bin/ruff check shmcam tests bench
	$(VENV)/bin/ruff format --check shmcam tests bench
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/ring_fanout.py
	$(VENV)/bin/python bench/bsread_stream.py

clean:
	rm -rf $(VENV) build *.egg-info
