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

lint: setup
	$(PY) -m ruff check polar_refine tests train_net.py demo benchmarks
