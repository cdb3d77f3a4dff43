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

.PHONY: test demo bench lint fuzz clean

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
	rm -rf $(VENV) .pytest_cache build *.egg-info
