# The two commands of README.md, each setting up .venv first when needed (tools/bootstrap.sh):
#   make bench   benchmark every recipe on the local quick suite and print the leaderboard (ARGS="..." adds
#                zoo bench options, e.g. make bench ARGS="--suite d4rl --algos mopo --download")
#   make test    ruff, then both test tiers (ARGS="-m 'not slow'" runs the fast tier only)
VENV ?= .venv
PYTHON ?= python3
ARGS ?=
STAMP := $(VENV)/.zoo-bootstrap

.PHONY: bench test setup

setup: $(STAMP)

# Re-run the set-up whenever the project's requirements or the script change.
$(STAMP): pyproject.toml tools/bootstrap.sh
	VENV=$(VENV) PYTHON=$(PYTHON) bash tools/bootstrap.sh
	touch $(STAMP)

bench: setup
	$(VENV)/bin/zoo bench $(ARGS)

test: setup
	$(VENV)/bin/python -m ruff check zoo tests benchmarks
	$(VENV)/bin/python -m pytest -q $(ARGS)
