# Everything a learner or CI needs: `make test` and `make lab` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Quick mode shortens only the long training cells of the notebooks (see README).
QUICK_ENV := MRCNN_QUICK=1

.PHONY: setup test test-perturbed lab bench train ablations clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# --durations: what each run costs is printed every time.
test: setup
	$(QUICK_ENV) $(PY) -m pytest --durations=25 tests
	$(QUICK_ENV) $(PY) -m pytest --durations=10 --nbval-lax --nbval-current-env notebooks

# The float32 equivalence tests again under other rounding: inputs jittered by a few ulps (8 seeds), the
# lowest and the AVX2 instruction sets of MKL, PyTorch and oneDNN, oneDNN off (see tests/perturbations.sh).
# CI runs it after `make test`.
test-perturbed: setup
	bash tests/perturbations.sh $(PY)

# Jupyter refuses to run as root unless told to (as in many containers).
lab: setup
	$(VENV)/bin/jupyter lab notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

bench: setup
	$(PY) benchmarks/ops.py

# The main job: the shapes data (made once), the small config trained for its default budget, its COCO
# evaluation, and pictures of a few val images. Training always passes --resume: an interrupted run
# continues, a finished one is only evaluated again.
# On a CPU it trains as two processes (DistributedDataParallel over gloo) of one thread, one data-loading
# process and 2 images each,
# 4 images per step as in the recipe: 1.65 times the steps per second of one process on a 2-core CPU.
# `make train DEVICE=cuda AMP=1` trains on one GPU with mixed precision, 4 images per step, into runs/shapes_cuda.
DEVICE ?= cpu
# A GPU run gets its own folder: --resume must never continue the CPU run on another device, or the other way round.
RUN := runs/shapes$(if $(filter cuda,$(DEVICE)),_cuda)
TRAIN_CPU := -m torch.distributed.run --standalone --nproc_per_node=2 -m mrcnn_from_scratch train --batch-size 2 --workers 1
TRAIN_GPU := -m mrcnn_from_scratch train $(if $(AMP),--amp)

SHAPES := datasets/shapes/annotations/instances_val.json

$(SHAPES): | $(VENV)/.installed
	$(PY) -m mrcnn_from_scratch.data.shapes --out datasets/shapes --train 2000 --val 200 --size 128 --seed 0

train: setup $(SHAPES)
	$(PY) $(if $(filter cpu,$(DEVICE)),$(TRAIN_CPU),$(TRAIN_GPU)) --data datasets/shapes --out $(RUN) \
		--config small --device $(DEVICE) --resume
	$(PY) -m mrcnn_from_scratch evaluate --checkpoint $(RUN)/last.pt --data datasets/shapes \
		--device $(DEVICE)
	$(PY) -m mrcnn_from_scratch predict --checkpoint $(RUN)/last.pt datasets/shapes/val/00000[0-5].png \
		--out $(RUN)/predictions --device $(DEVICE)
	@echo
	@echo "dataset:      datasets/shapes/ (annotations/instances_{train,val}.json, train/, val/)"
	@echo "checkpoint:   $(RUN)/last.pt"
	@echo "metrics:      $(RUN)/metrics.jsonl, loss curves in $(RUN)/loss.png"
	@echo "evaluation:   $(RUN)/eval.json (the COCO tables are printed above)"
	@echo "pictures:     $(RUN)/predictions/"

# The paper's ablations (chapter 11, docs/ablations.md): 8 variants × 3 seeds of 600 steps, two runs at a time
# of one thread each; about an hour on 2 cores. Run again, it trains only what is missing.
ablations: setup $(SHAPES)
	$(PY) -m mrcnn_from_scratch.ablate --data datasets/shapes --out runs/ablations --seeds 3 --iters 600 --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache
