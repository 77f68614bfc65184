# crowdwatch: `make demo` runs the main job on the embedded warehouse, `make test` checks all.
# Both create .venv and install from requirements.lock on first use; nothing else is needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint imports typecheck pytest bench lock clean browser messages

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "crowdwatch needs Python 3.11, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/crowdwatch demo

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The floors and wings of the code (import-linter contracts in pyproject.toml).
imports: install
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# Headless Chromium renders `crowdwatch report` in tests/app/test_report.py: Debian's package,
# installed once (as root, or with passwordless sudo); otherwise that test skips, saying why.
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	else echo "make: $(CHROMIUM) is missing; as root run: apt-get install -y" \
		"--no-install-recommends chromium (tests/app/test_report.py skips its browser check)"; \
		exit 0; fi; \
	echo "installing chromium (Debian package) for the report test"; \
	$$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium

browser: $(CHROMIUM)

pytest: install $(CHROMIUM)
	$(BIN)/pytest

test: lint imports typecheck pytest

bench: install
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# The message catalogues: extract the texts of the templates, update each language's .po (then
# translate what is new), compile the .mo files (committed; a test fails when they are stale).
MESSAGES := crowdwatch/risk
messages: install
	cd $(MESSAGES) && ../../$(BIN)/pybabel extract -F locales/babel.cfg -o locales/crowdwatch.pot \
		--no-location --sort-output --omit-header -k _ .
	$(BIN)/pybabel update -i $(MESSAGES)/locales/crowdwatch.pot -d $(MESSAGES)/locales -D crowdwatch \
		--ignore-obsolete --no-fuzzy-matching --ignore-pot-creation-date
	$(BIN)/pybabel compile -d $(MESSAGES)/locales -D crowdwatch --statistics

# Re-resolve the pinned versions from pyproject.toml in a scratch environment.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet '.[dev]'
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^crowdwatch' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .crowdwatch .mypy_cache .ruff_cache .pytest_cache build *.egg-info
