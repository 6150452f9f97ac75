# The two commands a user needs (both run the idempotent setup first):
#   make main   - train the tiny config on the embedded shapes set, evaluate, write visualisations
#   make test   - the test suite
PY := .venv/bin/python

.PHONY: setup main test lint
setup:
	bash scripts/setup.sh

main: setup
	bash scripts/main_job.sh

test: setup
	$(PY) -m pytest -q tests

# ruff format --check and ruff check over every Python file git tracks (settings: pyproject.toml)
lint: setup
	$(PY) -m ruff format --check $$(git ls-files '*.py')
	$(PY) -m ruff check $$(git ls-files '*.py')
