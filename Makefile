# The two commands of the README's quick start, plus their parts.
.PHONY: demo test setup setup-dev lint lock

VENV ?= .venv
BIN := $(VENV)/bin

demo: setup  ## set up, then run the whole pipeline on the embedded model and the shipped sample
	$(BIN)/criticrm pipeline --config configs/demo.yaml

test: setup-dev  ## set up with test tools, lint, and run the test suite
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -q -ra

setup:
	VENV=$(VENV) scripts/setup.sh

setup-dev:
	VENV=$(VENV) scripts/setup.sh --dev

lint:
	$(BIN)/ruff check src tests bench

lock:  ## write constraints.txt from the environment the tests passed in (the versions setup installs)
	VENV=$(VENV) scripts/lock.sh
