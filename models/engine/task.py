"""The ``Task`` base class: what the trainer needs to know about one kind of model.

A task says which sections and keys its YAML config has (``defaults``), builds the network
(``build_model``), the datasets (``make_dataset``), computes a training loss on a batch
(``training_step``) and scores a model on test groups (``evaluate``). The trainer
(``models.engine.trainer.train``) does the rest: optimiser, schedule, AMP, DDP, checkpoints, logs.

Config = nested dict of sections. ``Task.config(user)`` merges the user's dict into the defaults and raises
``BsrError("<where>: unknown key 'train.lrr'")`` for any key the defaults do not have, then checks the values
(``check_config``: types, ranges, allowed names, model constructor keywords). Both look only at the dict,
never at the disk. ``Task.resolve(cfg)`` is the separate step that reads files a config points at (e.g. the
blind chain fills its architecture from the stage-1/2 checkpoints); the trainer calls it. The ``train``
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
    "schedule": "cosine",   # cosine | constant | multistep | cosine_restart (after warm-up)
    "min_lr": 0.0,
    "milestones": [],       # multistep: iterations where the lr is multiplied by gamma
    "gamma": 0.5,
    "restart_period": 0,    # cosine_restart: period in iterations
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


SCHEDULES = ("cosine", "constant", "multistep", "cosine_restart")


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


def model_key(model_cfg: dict, message: str) -> str:
    """``model.<key>`` for the first constructor keyword of ``model_cfg`` named in ``message``, else ``model``."""
    import re

    for k in sorted(model_cfg, key=len, reverse=True):
        if k != "name" and re.search(rf"\b{re.escape(str(k))}\b", message):
            return f"model.{k}"
    return "model"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_int(v, key: str, where: str, lo: int | None = None, hi: int | None = None) -> None:
    """BsrError ``<where>: <key> must be an integer >= lo`` unless ``v`` is an int in ``[lo, hi]``."""
    if not _is_int(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = (f" >= {lo}" if hi is None else f" in [{lo}, {hi}]") if lo is not None else ""
        raise BsrError(f"{where}: {key} must be an integer{rng}, got {v!r}")


def check_number(v, key: str, where: str, lo: float | None = None, hi: float | None = None,
                 open_lo: bool = False) -> None:
    """BsrError unless ``v`` is a real number with ``lo <= v`` (``lo < v`` if ``open_lo``) and ``v <= hi``."""
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    if ok and lo is not None:
        ok = v > lo if open_lo else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        lo_s = "" if lo is None else (f"({lo}" if open_lo else f"[{lo}")
        rng = f" in {lo_s}, {hi}]" if lo is not None and hi is not None else (f" {'>' if open_lo else '>='} {lo}"
                                                                          if lo is not None else "")
        raise BsrError(f"{where}: {key} must be a number{rng}, got {v!r}")


def check_choice(v, key: str, where: str, choices) -> None:
    """BsrError unless ``v`` is one of ``choices``."""
    if v not in choices:
        raise BsrError(f"{where}: {key} must be one of {', '.join(map(str, choices))}, got {v!r}")


def init_model_config(path: str, key: str, where: str, allowed) -> dict:
    """``config["model"]`` of the checkpoint that ``init.<key>`` names; BsrError when it does not exist or
    holds another network than ``allowed`` (names)."""
    import os

    from bsrdata.models.checkpoint import read_config

    if not os.path.exists(path):
        raise BsrError(f"{path}: no such checkpoint (init.{key} in {where})")
    mc = read_config(path)["model"]
    allowed = tuple(allowed)
    if mc.get("name") not in allowed:
        raise BsrError(f"{path}: is a {mc.get('name')} checkpoint, init.{key} needs {' or '.join(allowed)}")
    return mc


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

    def resolve(self, cfg: dict, where: str = "config") -> dict:
        """The config completed from the files it names (checkpoints); BsrError naming the file. Base: ``cfg``."""
        return cfg

    def create_model(self, cfg: dict, where: str = "config"):
        """``build_model(cfg)`` with a constructor's ValueError / TypeError turned into one BsrError line
        naming the ``model.*`` key the message mentions (``model`` when none)."""
        try:
            return self.build_model(cfg)
        except (ValueError, TypeError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BsrError(f"{where}: {model_key(cfg.get('model') or {}, msg)}: {msg}") from None

    def check_config(self, cfg: dict, where: str) -> None:
        """Value checks beyond key names (override to add task-specific ones)."""
        t = cfg["train"]
        for k in ("iterations", "batch_size"):
            if not isinstance(t[k], int) or t[k] < 1:
                raise BsrError(f"{where}: train.{k} must be a positive integer, got {t[k]!r}")
        check_choice(t["schedule"], "train.schedule", where, SCHEDULES)
        ms = t["milestones"]
        if not isinstance(ms, (list, tuple)) or not all(_is_int(m) and m >= 1 for m in ms) or list(ms) != sorted(ms):
            raise BsrError(f"{where}: train.milestones must be increasing positive iterations, got {ms!r}")
        check_number(t["gamma"], "train.gamma", where, lo=0, hi=1, open_lo=True)
        check_int(t["restart_period"], "train.restart_period", where, lo=0)
        if t["schedule"] == "cosine_restart" and not t["restart_period"]:
            raise BsrError(f"{where}: train.schedule cosine_restart needs train.restart_period >= 1")
        if not isinstance(t["lr"], (int, float)) or t["lr"] <= 0:
            raise BsrError(f"{where}: train.lr must be > 0, got {t['lr']!r}")
        for k in ("log_every", "ckpt_every"):
            check_int(t[k], f"train.{k}", where, lo=1)
        for k in ("warmup", "workers", "threads", "val_every", "val_limit", "seed"):
            check_int(t[k], f"train.{k}", where, lo=0)
        for k in ("weight_decay", "min_lr", "grad_clip"):
            check_number(t[k], f"train.{k}", where, lo=0)
        for k in ("amp", "sync_bn"):
            if not isinstance(t[k], bool):
                raise BsrError(f"{where}: train.{k} must be true or false, got {t[k]!r}")
        b = t["betas"]
        if (not isinstance(b, (list, tuple)) or len(b) != 2
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < 1 for x in b)):
            raise BsrError(f"{where}: train.betas must be two numbers in [0, 1), got {b!r}")
        if not isinstance(t["val_groups"], (list, tuple)) or not all(
                isinstance(g, int) and not isinstance(g, bool) for g in t["val_groups"]):
            raise BsrError(f"{where}: train.val_groups must be a list of group numbers, got {t['val_groups']!r}")

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

    def param_groups(self, model, cfg: dict) -> list:
        """The optimiser's parameter groups: dicts with ``params`` and optionally ``lr_scale`` (the group's
        learning rate is ``lr_scale`` × the scheduled ``train.lr``). Base: every parameter that requires a
        gradient, one group. Override for per-part learning rates or frozen parts."""
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]

    def conventions(self, cfg: dict) -> dict:
        """The scoring conventions of :meth:`evaluate` (:func:`bsrdata.metrics.eval_conventions` /
        ``sr_conventions``), recorded in the run's ``metrics.json``; base: none."""
        return {}

    def collate(self, items):
        from bsrdata.dataset import collate

        return collate(items)

    # bsrdata.dataset.COLLATE_KEYS (tests/test_loader.py checks): the trainer's RingLoader stacks them itself
    collate.ring_keys = ("lr", "hr", "blur", "seg", "key", "invariant")

    def training_step(self, model, batch: dict, cfg: dict | None = None):
        """Forward + loss on a batch already on the device -> ``(loss tensor, {name: float})``."""
        raise NotImplementedError

    def evaluate(self, model, root, cfg: dict, groups, *, limit: int = 0, progress=None) -> dict:
        """Score ``model`` on test ``groups`` of the dataset at ``root``
        -> ``{group: {metric: value}, "avg": {...}}``."""
        raise NotImplementedError


# --------------------------------------------------------------------------------------------- registry
# ``bsr train TASK``: task name -> its Task class, imported only when that task is used.
TASKS = Registry("task")
TASKS.declare("cmos", "bsrdata.models.engine.task_cmos:CMOSTask")
TASKS.declare("rrdb-sft", "bsrdata.models.engine.task_sr:RRDBSFTTask")
TASKS.declare("blind", "bsrdata.models.engine.task_sr:BlindTask")
# baselines (docs/baselines.md): MANet
TASKS.declare("manet", "bsrdata.models.engine.task_manet:ManetTask")

# DAN
TASKS.declare("dan", "bsrdata.models.engine.task_dan:DANTask")

# DCLS
TASKS.declare("dcls", "bsrdata.models.engine.task_dcls:DCLSTask")

# KOALAnet
TASKS.declare("koalanet", "bsrdata.models.engine.task_koalanet:KOALAnetTask")



def register_task(name: str):
    """Class decorator: make ``bsr train NAME`` train this :class:`Task` subclass."""
    return TASKS.register(name)


def get_task(name: str) -> Task:
    """An instance of the task registered as ``name`` (one-line BsrError for an unknown name)."""
    return TASKS.get(name)()
