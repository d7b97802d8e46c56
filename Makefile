# The two commands of the README. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
# Debian packages the tests run: Chromium for the web page (tests/test_web.py), redis-server for
# the std-daq cameras (tests/test_camserver_cameras.py); apt installs them once.
TEST_DEBS := /usr/bin/chromium /usr/bin/chromedriver /usr/bin/redis-server
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
APT     := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: demo test bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(TEST_DEBS) &:
	$(APT) update -q
	$(APT) install -y -q --no-install-recommends chromium chromium-driver redis-server

browser: $(TEST_DEBS)

demo: $(STAMP)
	$(VENV)/bin/shmcam demo

test: $(STAMP) $(TEST_DEBS)
	$(VENV)/bin/ruff check shmcam tests bench
	$(VENV)/bin/ruff format --check shmcam tests bench
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python bench/ring_fanout.py
	$(VENV)/bin/python bench/bsread_stream.py

clean:
	rm -rf $(VENV) build *.egg-info
