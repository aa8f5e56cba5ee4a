# Everything a learner or CI needs: `make test` and `make lab` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Quick mode shortens only the long training cells of the notebooks (see README).
QUICK_ENV := MRCNN_QUICK=1

.PHONY: setup test lab bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

test: setup
	$(QUICK_ENV) $(PY) -m pytest tests
	$(QUICK_ENV) $(PY) -m pytest --nbval-lax --nbval-current-env notebooks

lab: setup
	$(VENV)/bin/jupyter lab notebooks

bench: setup
	$(PY) benchmarks/ops.py

clean:
	rm -rf $(VENV) .pytest_cache
