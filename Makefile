# Everything a learner or CI needs: `make test` and `make lab` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Quick mode shortens only the long training cells of the notebooks (see README).
QUICK_ENV := MRCNN_QUICK=1

.PHONY: setup test lab bench train clean

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

# Jupyter refuses to run as root unless told to (as in many containers).
lab: setup
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup
	$(PY) benchmarks/ops.py

# The main job: the shapes data (made once), the small config trained on the CPU for its default budget
# (`make train DEVICE=cuda AMP=1` for a GPU with mixed precision), its COCO evaluation, and pictures of a few val images. Training
# always passes --resume: an interrupted run continues, a finished one is only evaluated again.
train: setup
	test -f datasets/shapes/annotations/instances_val.json || \
		$(PY) -m mrcnn_from_scratch.data.shapes --out datasets/shapes --train 2000 --val 200 --size 128 --seed 0
	$(PY) -m mrcnn_from_scratch train --data datasets/shapes --out runs/shapes --config small \
		--device $(or $(DEVICE),cpu) $(if $(AMP),--amp) --resume
	$(PY) -m mrcnn_from_scratch evaluate --checkpoint runs/shapes/last.pt --data datasets/shapes \
		--device $(or $(DEVICE),cpu)
	$(PY) -m mrcnn_from_scratch predict --checkpoint runs/shapes/last.pt datasets/shapes/val/00000[0-5].png \
		--out runs/shapes/predictions --device $(or $(DEVICE),cpu)
	@echo
	@echo "dataset:      datasets/shapes/ (annotations/instances_{train,val}.json, train/, val/)"
	@echo "checkpoint:   runs/shapes/last.pt"
	@echo "metrics:      runs/shapes/metrics.jsonl, loss curves in runs/shapes/loss.png"
	@echo "evaluation:   runs/shapes/eval.json (the COCO tables are printed above)"
	@echo "pictures:     runs/shapes/predictions/"

clean:
	rm -rf $(VENV) .pytest_cache
