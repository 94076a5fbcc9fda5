# make test   - create .venv with Python >= 3.13 (found here), install, run the suite
# make bench  - same venv, run the comparison in perf/ (results in perf/results/)
# make test-all - the suite with the slow soaks

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Editable installs are compiled once; a fresh isolate would otherwise
# recompile the package from source at every start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: test test-all bench lint clean compile

$(STAMP): pyproject.toml
	@set -e; \
	py=$$(sh .ci/find-python); \
	echo "using $$py ($$($$py --version))"; \
	$$py -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e ".[test,perf,distributed]"; \
	touch $(STAMP)

compile: $(STAMP)
	@$(PY) -m compileall -q subiso

test: $(STAMP) compile
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP) compile
	$(PY) -m pytest -q

bench: $(STAMP) compile
	$(PY) perf/run.py $(if $(FULL),--full,)

lint: $(STAMP)
	$(PY) -m pip install -q ruff mypy
	$(PY) -m ruff check subiso tests perf
	$(PY) -m mypy

clean:
	rm -rf $(VENV) perf/results
