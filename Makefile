# The two commands of the README. Each creates .venv (Python 3.11, pinned requirements,
# the package in editable mode) when it is missing or out of date, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: reproduce test setup clean-runs

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The main job: every notebook, headless, at $(PROFILE); writes figures/, results/, runs/.
reproduce: $(STAMP)
	$(PY) -m fa_utils reproduce --profile $(PROFILE)

# The whole test suite: unit tests, the paper's claims at small scale, and nbval over every
# notebook at the smoke profile (conftest.py sets FA_PROFILE=smoke and a temporary output root).
test: $(STAMP)
	$(PY) -m pytest -ra --nbval-lax --timeout 900 tests notebooks

clean-runs:
	rm -rf runs
