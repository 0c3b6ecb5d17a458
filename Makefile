# One entry point for every task; each target creates .venv and installs into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The console's browser tests drive Debian's chromium, installed as root (or through sudo) when
# missing; the step does nothing once it is there.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install run test lint format bench clean chromium screenshots

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e clients/python -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/idmirror up

test: $(STAMP) chromium
	$(BIN)/pytest

chromium:
	@command -v chromium >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

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
