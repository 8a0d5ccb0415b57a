# The two commands of the README. Each creates .venv (Python 3.11, pinned requirements,
# the package in editable mode) when it is missing or out of date, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: reproduce test setup git-filter clean-runs

# .venv, then the notebook git filter (below)
setup: $(STAMP)
	@$(MAKE) --no-print-directory git-filter

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
# TEST_WORKERS pytest-xdist processes of one torch thread each (conftest.py); loadscope keeps a
# notebook's cells, a test module and a test class each on one worker, in order.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -ra --nbval-lax --timeout 900 -n $(TEST_WORKERS) --dist loadscope tests notebooks

# Keep notebook outputs out of git: nbstripout as the git filter that .gitattributes names
# (`*.ipynb filter=nbstripout`), with --keep-id so the committed cell ids stay as they are.
# Idempotent. Outside a git work tree of its own (a tarball) it says so and does nothing.
# In a linked worktree, git keeps the filter in the repository's shared config.
git-filter:
	@if [ "$$(git -C "$(CURDIR)" rev-parse --show-toplevel 2>/dev/null)" = "$(CURDIR)" ]; then \
	  $(VENV)/bin/nbstripout --install --attributes .gitattributes && \
	  git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id' && \
	  git config diff.ipynb.textconv '"$(abspath $(PY))" -m nbstripout --keep-id -t' && \
	  echo "git filter nbstripout installed: notebook outputs are stripped when committed"; \
	else \
	  echo "$(CURDIR) is not the top of a git work tree: no nbstripout filter installed"; \
	fi

clean-runs:
	rm -rf runs
