# The two commands of the README: `make demo` and `make test`. Both bootstrap .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The tests use every backend this machine can run; the package itself needs only the core.
EXTRAS ?= dev,postgresql,mysql,redis,celery,browser
READY := $(VENV)/.ready

.PHONY: demo shop test lint bench clean

$(READY): setup.cfg pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit("flask-neuroon needs Python >= 3.10, this is " + sys.version.split()[0]) if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=23"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt -e ".[$(EXTRAS)]"
	@touch $@

demo: $(READY)  ## search, click, pay through a cross-site gateway, see the attributed conversion
	$(BIN)/python -m examples.demo

shop: $(READY)  ## run the demo shop, the gateway and the fake API for a person to click through
	$(BIN)/python -m examples.demo --serve

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check flask_neuroon tests examples benchmarks
	$(BIN)/mypy

test: lint  ## lint, types, then the whole suite
	$(BIN)/python -m pytest

bench: $(READY)  ## the benchmarks: a table of ratios, figures in benchmarks/results/latest.json
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis build *.egg-info
