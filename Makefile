# make test   - create .venv with Python >= 3.13 (found here), install, run the suite
# make bench  - same venv, run the comparison in perf/ (results in perf/results/)
# make test-all - the suite with the slow soaks
# make docs   - same venv with the docs extra; the documentation site into site/ (strict)
# make matrix - the whole suite on Debian's CPython 3.13, 3.14 and 3.15 (root needed)
# make bench PY=3.14 - the benchmark on one of those instead (results copied back)
# make compare BASE=<git rev> - headline figures, that revision against the working tree
#               (or WORK=<git rev>), ROUNDS=n rounds, PY=3.14 too (perf/results/compare/)

VENV := .venv
# `make bench PY=3.14` runs on Debian's 3.14 (see .ci/matrix); PY is
# otherwise this venv's interpreter.
ifneq ($(filter 3.%,$(PY)),)
PY_VERSION := $(PY)
override PY := $(VENV)/bin/python
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Editable installs are compiled once; a fresh isolate would otherwise
# recompile the package from source at every start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: test test-all bench compare lint clean compile matrix compat docs

$(STAMP): pyproject.toml
	@set -e; \
	py=$$(sh .ci/find-python); \
	echo "using $$py ($$($$py --version))"; \
	$$py -m venv $(VENV); \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e ".[test,perf,distributed]"; \
	touch $(STAMP)

# The docs extra on top of whatever the venv holds; from a clean clone it
# makes the venv itself, as $(STAMP) does.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): pyproject.toml
	@set -e; \
	if ! [ -x $(PY) ]; then \
		py=$$(sh .ci/find-python); \
		echo "using $$py ($$($$py --version))"; \
		$$py -m venv $(VENV); \
		$(PY) -m pip install -q --upgrade pip; \
	fi; \
	$(PY) -m pip install -q -e ".[docs]"; \
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

compile: $(STAMP)
	@$(PY) -m compileall -q subiso

test: $(STAMP) compile
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP) compile
	$(PY) -m pytest -q

ifeq ($(PY_VERSION),)
bench: $(STAMP) compile
	$(PY) perf/run.py $(if $(FULL),--full,)
else
bench:
	bash .ci/matrix bench $(PY_VERSION) $(if $(FULL),--full,)
endif

# With PY=3.x perf/compare archives the base here (the project's copy in
# Debian's root has no git history) and measures there with .ci/matrix run.
compare: $(STAMP)
	@test -n "$(BASE)" || { echo "usage: make compare BASE=<git rev> [ROUNDS=n] [PY=3.14] [WORK=<git rev>]"; exit 2; }
	$(PY) perf/compare $(if $(PY_VERSION),--python $(PY_VERSION),) $(if $(ROUNDS),--rounds $(ROUNDS),) \
		$(if $(WORK),--work $(WORK),) $(BASE)

matrix:
	bash .ci/matrix test

compat:
	sh .ci/compat

lint: $(STAMP)
	$(PY) -m pip install -q ruff mypy
	$(PY) -m ruff check subiso tests perf
	$(PY) -m mypy

clean:
	rm -rf $(VENV) perf/results
