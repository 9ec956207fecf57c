# Two entry points: `make demo` runs the main job, `make test` runs the suite.
# Both create (or reuse) the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/python -m skild_phys.demo

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/pip install -q mcising
	$(BIN)/python benchmarks/bench_wolff.py

clean:
	rm -rf $(VENV) build *.egg-info
