"""The ``Task`` base class: what the trainer needs to know about one kind of model.

A task says which sections and keys its YAML config has (``defaults``), builds the network
(``build_model``), the datasets (``make_dataset``), computes a training loss on a batch
(``training_step``) and scores a model on test groups (``evaluate``). The trainer
(``models.engine.trainer.train``) does the rest: optimiser, schedule, AMP, DDP, checkpoints, logs.

Config = nested dict of sections. ``Task.config(user)`` merges the user's dict into the defaults and raises
``BsrError("<where>: unknown key 'train.lrr'")`` for any key the defaults do not have. The ``train``
section (``TRAIN_DEFAULTS``) is common to all tasks; ``data.root`` is set by the trainer from ``--data``.
"""

from __future__ import annotations

import copy

from bsrdata.errors import BsrError
from bsrdata.registry import Registry

TRAIN_DEFAULTS = {
    "iterations": 1000,     # optimiser steps
    "batch_size": 8,        # global batch (split over DDP ranks)
    "lr": 1.0e-4,
    "betas": [0.9, 0.99],
    "weight_decay": 0.0,
    "warmup": 0,            # linear warm-up iterations
    "schedule": "cosine",   # cosine | constant (after warm-up)
    "min_lr": 0.0,
    "amp": True,            # mixed precision (float16 autocast + GradScaler), CUDA only
    "grad_clip": 0.0,       # max grad norm, 0 = off
    "seed": 0,
    "workers": 2,           # DataLoader workers per process
    "log_every": 10,        # CSV log / progress bar update, iterations
    "val_every": 0,         # validation period in iterations, 0 = only at the end
    "val_groups": [1],      # test groups scored during training
    "val_limit": 0,         # images per group during training validation, 0 = all
    "ckpt_every": 1000,     # checkpoint period (RUN/last), iterations
    "sync_bn": True,        # SyncBatchNorm under multi-GPU DDP
    "threads": 0,           # torch CPU threads, 0 = leave as is
}


def merge_config(defaults: dict, user: dict | None, where: str = "config", prefix: str = "") -> dict:
    """Deep-merge ``user`` into a copy of ``defaults``; unknown keys or a dict/non-dict clash -> BsrError."""
    out = copy.deepcopy(defaults)
    if user is None:
        return out
    if not isinstance(user, dict):
        raise BsrError(f"{where}: '{prefix.rstrip('.') or 'top level'}' must be a mapping")
    for k, v in user.items():
        name = f"{prefix}{k}"
        if k not in out:
            raise BsrError(f"{where}: unknown key '{name}' (known: {', '.join(sorted(map(str, out)))})")
        if isinstance(out[k], dict) and out[k]:
            out[k] = merge_config(out[k], v, where, name + ".")
        elif isinstance(out[k], dict):  # free-form mapping (e.g. model.gia)
            if v is not None and not isinstance(v, dict):
                raise BsrError(f"{where}: '{name}' must be a mapping")
            out[k] = dict(v or {})
        else:
            if isinstance(v, dict):
                raise BsrError(f"{where}: '{name}' must be a value, not a mapping")
            if isinstance(out[k], float) and isinstance(v, str):
                try:  # YAML 1.1 reads 1e-3 (no dot) as a string
                    v = float(v)
                except ValueError:
                    raise BsrError(f"{where}: '{name}' must be a number, got {v!r}") from None
            out[k] = v
    return out


class Task:
    """Base class; subclasses set ``name`` and ``defaults`` and implement the four methods.

    ``defaults``: sections other than ``train`` (``model`` with the registry ``name`` and constructor
    keywords, ``data``, ``loss``, ...). ``train_defaults``: overrides of :data:`TRAIN_DEFAULTS` for this task.
    """

    name = "task"
    defaults: dict = {}
    train_defaults: dict = {}

    def default_config(self) -> dict:
        cfg = {"task": self.name, "train": {**copy.deepcopy(TRAIN_DEFAULTS), **copy.deepcopy(self.train_defaults)}}
        cfg.update(copy.deepcopy(self.defaults))
        cfg.setdefault("data", {})
        cfg["data"] = {"root": None, **cfg["data"]}
        return cfg

    def config(self, user: dict | None, where: str = "config") -> dict:
        """The full config: defaults merged with ``user`` (unknown keys -> BsrError naming ``where``)."""
        cfg = merge_config(self.default_config(), user, where)
        if cfg.get("task") != self.name:
            raise BsrError(f"{where}: task is '{cfg.get('task')}', this run trains '{self.name}'")
        self.check_config(cfg, where)
        return cfg

    def check_config(self, cfg: dict, where: str) -> None:
        """Value checks beyond key names (override to add task-specific ones)."""
        t = cfg["train"]
        for k in ("iterations", "batch_size"):
            if not isinstance(t[k], int) or t[k] < 1:
                raise BsrError(f"{where}: train.{k} must be a positive integer, got {t[k]!r}")
        if t["schedule"] not in ("cosine", "constant"):
            raise BsrError(f"{where}: train.schedule must be cosine or constant, got {t['schedule']!r}")
        if not isinstance(t["lr"], (int, float)) or t["lr"] <= 0:
            raise BsrError(f"{where}: train.lr must be > 0, got {t['lr']!r}")

    # --- to implement -------------------------------------------------------------------------------
    def build_model(self, cfg: dict):
        """The network to train (``torch.nn.Module``), freshly initialised (initial weights allowed)."""
        raise NotImplementedError

    def make_dataset(self, cfg: dict, split: str, train: bool):
        """A torch Dataset over ``cfg["data"]["root"]``; items are dicts collated by ``collate``."""
        raise NotImplementedError

    def check_data(self, cfg: dict, dataset) -> None:
        """Raise BsrError when the training dataset cannot serve this task (e.g. no labels)."""

    def init_from_data(self, model, dataset, cfg: dict) -> dict:
        """Data-dependent initialisation of a fresh model (not called on resume); returns facts to log."""
        return {}

    def collate(self, items):
        from bsrdata.dataset import collate

        return collate(items)

    def training_step(self, model, batch: dict, cfg: dict | None = None):
        """Forward + loss on a batch already on the device -> ``(loss tensor, {name: float})``."""
        raise NotImplementedError

    def evaluate(self, model, root, cfg: dict, groups, *, limit: int = 0, progress=None) -> dict:
        """Score ``model`` on test ``groups`` of the dataset at ``root`` -> ``{group: {metric: value}, "avg": {...}}``."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- registry
# ``bsr train TASK``: task name -> its Task class, imported only when that task is used.
TASKS = Registry("task")
TASKS.declare("cmos", "bsrdata.models.engine.task_cmos:CMOSTask")
TASKS.declare("rrdb-sft", "bsrdata.models.engine.task_sr:RRDBSFTTask")
TASKS.declare("blind", "bsrdata.models.engine.task_sr:BlindTask")


def register_task(name: str):
    """Class decorator: make ``bsr train NAME`` train this :class:`Task` subclass."""
    return TASKS.register(name)


def get_task(name: str) -> Task:
    """An instance of the task registered as ``name`` (one-line BsrError for an unknown name)."""
    return TASKS.get(name)()
