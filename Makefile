# The README's two commands: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# One stamp per set of extras; re-installs when pyproject.toml changes.
STAMP_TEST := $(VENV)/.stamp-test
STAMP_DEMO := $(VENV)/.stamp-demo
STAMP_DEV  := $(VENV)/.stamp-dev
STAMP_FUZZ := $(VENV)/.stamp-fuzz
FUZZ_SECONDS ?= 600

# `make test-min`: a second venv at the declared floor (pyproject's lower bounds, pinned by
# tools/min_constraints.py), on the floor Python, running the tests of what the floor promises.
VENV_MIN   := .venv-min
PY_MIN     := $(VENV_MIN)/bin/python
PYTHON_MIN ?= python$(shell $(PYTHON) tools/min_constraints.py --python)
STAMP_MIN  := $(VENV_MIN)/.stamp-min
MIN_EXTRAS := flax,equinox
MIN_TESTS  := tests/core tests/io tests/checkpoint tests/optim tests/compat tests/interop

.PHONY: test test-min demo bench lint fuzz clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip

$(STAMP_TEST): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test,examples]"
	touch $@

$(STAMP_DEMO): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[examples]"
	touch $@

$(STAMP_FUZZ): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test,fuzz]"
	touch $@

$(STAMP_DEV): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e ".[test,examples,dev]"
	touch $@

test: $(STAMP_TEST)
	$(PY) -m pytest -q -n 2 --dist loadfile

$(PY_MIN):
	$(PYTHON_MIN) -m venv $(VENV_MIN)
	$(PY_MIN) -m pip install --upgrade --quiet pip

$(STAMP_MIN): pyproject.toml tools/min_constraints.py | $(PY_MIN)
	$(PYTHON) tools/min_constraints.py --extras $(MIN_EXTRAS) > $(VENV_MIN)/constraints.txt
	$(PY_MIN) -m pip install --quiet -c $(VENV_MIN)/constraints.txt -e ".[test,$(MIN_EXTRAS)]"
	touch $@

# The floor's own check (tests/compat/test_floor.py) runs when JAXNETS_FLOOR names the constraints.
test-min: $(STAMP_MIN)
	JAXNETS_FLOOR=$(VENV_MIN)/constraints.txt $(PY_MIN) -m pytest -q -n 2 --dist loadfile $(MIN_TESTS)

demo: $(STAMP_DEMO)
	$(PY) examples/demo.py

bench: $(STAMP_TEST)
	$(PY) bench/run_all.py

# Coverage-guided fuzzing of every load path (atheris), FUZZ_SECONDS per target; see fuzz/run.py.
fuzz: $(STAMP_FUZZ)
	$(PY) fuzz/run.py --all --seconds $(FUZZ_SECONDS)

lint: $(STAMP_DEV)
	$(VENV)/bin/ruff check jaxnets tests examples bench fuzz
	$(VENV)/bin/mypy jaxnets
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(VENV_MIN) .pytest_cache build *.egg-info
