"""The `train` command: the training loop, with validation, checkpoints and exact resumption.

    python -m mrcnn_from_scratch train --data DIR --out RUN [--config small|r50] [--iters N] [--resume] ...
    torchrun --standalone --nproc_per_node=N -m mrcnn_from_scratch train ...   (several processes, see distributed.py)

One step: load a batch, compute the five losses, check they are finite, backpropagate their sum, clip the
gradients' norm, step the optimizer and the learning-rate schedule. Around the steps: validation on the
val split (mask and box AP) every `val_every` iterations and at the end, RUN/last.pt every
`checkpoint_every` iterations and at the end, RUN/metrics.jsonl and RUN/loss.png (see logbook.py).

Resuming is exact because every source of randomness is either saved or a function of the step number:
the weights, optimizer, schedule and gradient scaler are saved; torch's, NumPy's and Python's generators
are saved (one set per process); and the data order is a function of (seed, step) (see data_order.py).
"""
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import MaskRCNNConfig
from ..data import collate_fn
from ..data.check import validate_split
from ..model import MaskRCNN
from .checkpoint import (capture_rng_state, load_checkpoint, remove_stale_temporaries, restore_rng_state,
                         save_atomically)
from .data_order import AugmentedSamples, ShuffledBatches, seed_worker
from .distributed import Process, end_process, gather_from_all, mean_over_processes, start_process, stop_together
from .errors import TrainingDiverged, UsageError
from .evaluate import coco_metrics, predict_dataset
from .layout import class_names_of, open_split
from .logbook import MetricsLog, plot_losses
from .recipe import RECIPES, build_optimizer, build_scheduler
from .settings import TrainOptions, build_config, load_initial_weights, resolve_settings

__all__ = ["TrainOptions", "Training", "resolve_settings", "train"]


def train(options: TrainOptions) -> Path:
    """Train as `options` say and return the path of the final checkpoint (RUN/last.pt)."""
    process = start_process(options.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        with stop_together(process):  # if another process dies, stop with one line (see distributed.py)
            return Training(options, process).run()
    finally:
        torch.set_num_threads(threads)
        end_process(process)


def to_device(images: list[torch.Tensor], targets: list[dict], device: torch.device) -> tuple[list, list]:
    images = [image.to(device, non_blocking=True) for image in images]
    targets = [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
    return images, targets


class Training:
    """One run: set up in __init__ (new or resumed), then `run()`."""

    def __init__(self, options: TrainOptions, process: Process):
        self.options, self.process, self.device = options, process, process.device
        if options.amp and self.device.type != "cuda":
            # On a CPU, float16 is slower, not faster, and bfloat16 pays only on CPUs with matrix units
            # (AMX). So --amp is refused there rather than silently ignored or silently slow.
            raise UsageError("--amp (mixed precision) needs a CUDA GPU; on a CPU, train without --amp")
        self.run_dir = Path(options.out)
        self.checkpoint_path = self.run_dir / "last.pt"
        stored = self._existing_checkpoint()
        split = stored["settings"]["train_split"] if stored else options.train_split or "train"
        train_set = open_split(options.data, split)
        self.val_set = open_split(options.data, options.val_split)
        self.class_names = class_names_of(train_set)
        if class_names_of(self.val_set) != self.class_names:
            raise UsageError(f"the {split} split has the classes {list(self.class_names)} but the "
                             f"{options.val_split} split has {list(class_names_of(self.val_set))}")
        validate_split(train_set, training=True, verbose=process.is_main)  # see data/check.py
        validate_split(self.val_set, training=False, verbose=process.is_main)
        stored_settings = stored["settings"] if stored else None
        self.settings = resolve_settings(options, stored_settings, len(train_set), process.world_size)
        self.recipe = RECIPES[self.settings["config"]]
        self.total_iters = self.settings["iters"]
        self.val_every = self.recipe.val_every if options.val_every is None else options.val_every
        self.checkpoint_every = options.checkpoint_every or self.recipe.checkpoint_every

        # The model's initial weights, then its anchor and RoI sampling (DDP copies rank 0's weights).
        torch.manual_seed(self.settings["seed"] + process.rank)
        if stored:
            if tuple(stored["class_names"]) != self.class_names:
                raise UsageError(f"the run was trained on {stored['class_names']}, "
                                 f"the data has {list(self.class_names)}")
            self.config = MaskRCNNConfig(**stored["config"])
        else:
            self.config = build_config(self.settings, self.class_names)
        try:
            self.model = MaskRCNN(self.config)
        except ValueError as error:  # a config value no part accepts, such as depth=20 or norm="ln"
            raise UsageError(f"the config cannot be built: {error}") from None
        if not stored:
            load_initial_weights(self.model, self.settings, process.is_main)
        self.model.to(self.device)
        if options.compile:
            self.model.compile_dense_parts()
        self.optimizer = build_optimizer(self.recipe, self.model, self.settings["lr"])
        self.scheduler = build_scheduler(self.optimizer, self.recipe, self.total_iters)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.amp)
        self.iteration, self.train_seconds, self.saved_iteration = 0, 0.0, None
        if stored:
            self._load_state(stored)
        # DDP averages the gradients over processes in backward. find_unused_parameters stays False: every
        # trainable parameter gets a gradient at every step, since the mask branch runs even on zero RoIs.
        self.ddp_model = self.model
        if process.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.batches = iter(self._training_loader(train_set))
        if process.is_main:  # only now: a run that fails its checks leaves no folder behind
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", upto=self.iteration) if process.is_main else None

    def _existing_checkpoint(self) -> dict | None:
        if self.process.is_main:
            remove_stale_temporaries(self.checkpoint_path)
        if self.checkpoint_path.exists() and not self.options.resume:
            raise UsageError(f"{self.checkpoint_path} exists: pass --resume to continue that run, "
                             "or choose another --out")
        if self.checkpoint_path.exists():
            return load_checkpoint(self.checkpoint_path)
        if self.options.resume and self.process.is_main:
            print(f"--resume: no checkpoint in {self.run_dir} yet, so a new run starts")
        return None

    def _load_state(self, stored: dict) -> None:
        self.model.load_state_dict(stored["model"])
        self.optimizer.load_state_dict(stored["optimizer"])
        self.scheduler.load_state_dict(stored["scheduler"])
        if self.scaler.is_enabled() and stored["scaler"]:
            self.scaler.load_state_dict(stored["scaler"])
        self.iteration = self.saved_iteration = stored["iteration"]
        self.train_seconds = stored["train_seconds"]
        if len(stored["rng"]) == self.process.world_size:
            restore_rng_state(stored["rng"][self.process.rank], self.device)
        elif self.process.is_main:
            print(f"the run had {len(stored['rng'])} processes, this one {self.process.world_size}: it goes on "
                  "from the checkpoint, but not exactly as the same number of processes would have")

    def _training_loader(self, train_set) -> torch.utils.data.DataLoader:
        from ..data.transforms import train_transforms  # the one part of the package that needs torchvision

        settings = self.settings
        order = ShuffledBatches(len(train_set), settings["batch_size"], settings["seed"], self.process.rank,
                                self.process.world_size, start=self.iteration)
        return torch.utils.data.DataLoader(
            AugmentedSamples(train_set, train_transforms(photometric=bool(settings["photometric"]))),
            batch_sampler=order, collate_fn=collate_fn,
            num_workers=self.options.workers, worker_init_fn=seed_worker,
            generator=torch.Generator().manual_seed(settings["seed"]), pin_memory=self.device.type == "cuda")

    def run(self) -> Path:
        if self.iteration >= self.total_iters:
            if self.process.is_main:
                print(f"{self.checkpoint_path} has already done all {self.total_iters} iterations")
            return self.checkpoint_path
        main, settings = self.process.is_main, self.settings
        if main:
            print(f"training {settings['config']} ({len(self.class_names)} classes: {', '.join(self.class_names)}) "
                  f"on {self.device} × {self.process.world_size} for {self.total_iters} iterations of "
                  f"{settings['batch_size'] * self.process.world_size} images, lr {settings['lr']:g}; "
                  f"writing {self.run_dir}")
        progress = tqdm(total=self.total_iters, initial=self.iteration, desc="train", disable=not main)
        try:
            while self.iteration < self.total_iters:
                self.iteration += 1
                self._step(progress)
                if self.val_every and self.iteration % self.val_every == 0 and self.iteration < self.total_iters:
                    self.validate()
                if self.iteration % self.checkpoint_every == 0 and self.iteration < self.total_iters:
                    self.save()
            self.validate()
            self.save()
        except BaseException:
            if main:  # draw the curves up to the failure: they often show what went wrong
                plot_losses(self.log.path, self.run_dir / "loss.png")
            raise
        finally:
            progress.close()
        return self.checkpoint_path

    def _step(self, progress: tqdm) -> None:
        started = time.perf_counter()
        images, targets = to_device(*next(self.batches), self.device)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.options.amp):
            losses = self.ddp_model(images, targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(sum(losses.values())).backward()
        self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
        # One read of the step's numbers, after the backward pass, so that a GPU never waits for the host
        # in the middle of a step. A non-finite loss still stops training before the weights change.
        values = mean_over_processes({**losses, "grad_norm": grad_norm}, self.process)  # the same on all processes
        grad_norm = values.pop("grad_norm")
        self._stop_if_not_finite(values, "")
        if not self.options.amp:  # with AMP, an Inf gradient only makes the scaler skip the step
            self._stop_if_not_finite({"the gradient norm": grad_norm}, " (the losses were finite)")
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.train_seconds += time.perf_counter() - started

        total = sum(values.values())
        if self.process.is_main:
            progress.update()
            progress.set_postfix(loss=f"{total:.3f}", mask=f"{values['loss_mask']:.3f}", lr=f"{lr:.2g}",
                                 cls=f"{values['loss_classifier']:.3f}", box=f"{values['loss_box_reg']:.3f}")
            if self.iteration % self.options.log_every == 0:
                self.log.append({"type": "train", "iteration": self.iteration, "lr": lr, "loss": total, **values,
                                 # null for a step the AMP scaler skipped: JSON has no Inf
                                 "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                                 "seconds": round(self.train_seconds, 3)})

    def _stop_if_not_finite(self, values: dict[str, float], note: str) -> None:
        bad = [f"{name} = {value}" for name, value in values.items() if not math.isfinite(value)]
        if bad:
            kept = (f"{self.checkpoint_path} still holds iteration {self.saved_iteration}"
                    if self.saved_iteration is not None else "no checkpoint had been written yet")
            raise TrainingDiverged(f"training stopped at iteration {self.iteration}: {', '.join(bad)}{note}. "
                                   f"{kept}. A lower --lr (or a longer warm-up) usually helps.")

    def validate(self) -> None:
        """Mask and box AP on the val split, each process predicting its share, rank 0 scoring all."""
        mine = list(range(self.process.rank, len(self.val_set), self.process.world_size))
        # Prediction draws no random numbers, but the DataLoader it uses does (a seed for its workers):
        # fork_rng puts the generators back, so a run with validations trains as one without.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            results = predict_dataset(self.model, self.val_set, mine, self.device, self.settings["batch_size"])
        self.model.train()
        gathered = gather_from_all(results, self.process)
        if not self.process.is_main:
            return
        all_results = [r for part in gathered for r in part]
        metrics = coco_metrics(self.val_set.coco, all_results, self.val_set.ids, verbose=False)
        self.log.append({"type": "val", "iteration": self.iteration, **metrics})
        tqdm.write(f"iteration {self.iteration}: mask AP {metrics['segm.AP']:.3f} "
                   f"(AP50 {metrics['segm.AP50']:.3f}), box AP {metrics['bbox.AP']:.3f} "
                   f"on {len(self.val_set)} {self.options.val_split} images")

    def save(self) -> None:
        """Write RUN/last.pt (see checkpoint.py); every process sends rank 0 its generators' states."""
        rng = gather_from_all(capture_rng_state(self.device), self.process)
        if not self.process.is_main:
            return
        save_atomically({
            "model": self.model.state_dict(), "config": self.config.to_dict(), "class_names": list(self.class_names),
            "iteration": self.iteration, "train_seconds": self.train_seconds, "settings": self.settings,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng,
            "data_order": {"seed": self.settings["seed"], "batch_size": self.settings["batch_size"],
                           "world_size": self.process.world_size, "next_step": self.iteration},
        }, self.checkpoint_path)
        self.saved_iteration = self.iteration
        plot_losses(self.log.path, self.run_dir / "loss.png")
