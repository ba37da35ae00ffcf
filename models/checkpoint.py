"""Checkpoints: a folder with ``model.safetensors`` (weights and buffers) and ``config.json``.

``config["model"]`` holds the registry name and the constructor's keyword arguments
(``{"name": "cmos", "num_classes": 40, ...}``), so :func:`load` rebuilds the network without pickles.
Both files are written to temporary names and renamed, and ``config.json`` last, so a folder whose
``config.json`` exists is complete.
"""

from __future__ import annotations

import json
import os

import torch

from bsrdata.errors import BsrError
from bsrdata.fileio import tmp_name, write_json_atomic

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
# constructor arguments that only matter when a network is first built (initial weights)
INIT_ONLY = ("backbone_weights", "pretrained")


def _state(model: torch.nn.Module) -> dict:
    m = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return {k: v.detach().to("cpu").contiguous() for k, v in m.state_dict().items()}


def save(path_dir, model: torch.nn.Module, config: dict) -> str:
    """Write ``model``'s state dict and ``config`` (JSON-serialisable, with ``config["model"]["name"]``)."""
    from safetensors.torch import save_file

    if "model" not in config or "name" not in config["model"]:
        raise BsrError("checkpoint config: needs model.name")
    path_dir = os.fspath(path_dir)
    os.makedirs(path_dir, exist_ok=True)
    cfg_path = os.path.join(path_dir, CONFIG)
    if os.path.exists(cfg_path):
        os.remove(cfg_path)  # folder is incomplete until the new config lands
    tmp = tmp_name(os.path.join(path_dir, WEIGHTS))
    state = _state(model)
    # safetensors refuses tensors that share memory; clone those
    seen = {}
    for k, v in state.items():
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if ptr is not None and ptr in seen:
            state[k] = v.clone()
        seen[ptr] = k
    try:
        save_file(state, tmp, metadata={"format": "bsrdata-checkpoint/1"})
        with open(tmp, "rb+") as fh:  # safetensors does not fsync; the atomic-write rule does
            os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(path_dir, WEIGHTS))
    except OSError as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise BsrError(f"{os.path.join(path_dir, WEIGHTS)}: cannot write ({exc.strerror or exc})") from None
    write_json_atomic(cfg_path, config, indent=2, sort_keys=True)  # last: the folder is complete
    return path_dir


def read_config(path_dir) -> dict:
    """The ``config.json`` of a checkpoint folder (BsrError if missing or unreadable)."""
    cfg_path = os.path.join(os.fspath(path_dir), CONFIG)
    if not os.path.isfile(cfg_path):
        raise BsrError(f"{path_dir}: not a checkpoint (no {CONFIG})")
    try:
        with open(cfg_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise BsrError(f"{cfg_path}: unreadable ({exc})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or "name" not in cfg["model"]:
        raise BsrError(f"{cfg_path}: no model.name")
    return cfg


def model_kwargs(model_cfg: dict, *, build: bool = False) -> dict:
    """Constructor keyword arguments from ``config["model"]`` (initial-weight options dropped unless ``build``)."""
    return {k: v for k, v in model_cfg.items() if k != "name" and (build or k not in INIT_ONLY)}


def load_state(model: torch.nn.Module, path_dir) -> None:
    """Copy the checkpoint's tensors into ``model`` strictly (BsrError on any name or shape mismatch)."""
    from bsrdata.models.weights import load_state as copy_state
    from bsrdata.models.weights import read_weights

    w = os.path.join(os.fspath(path_dir), WEIGHTS)
    if not os.path.isfile(w):
        raise BsrError(f"{path_dir}: {WEIGHTS} missing")
    state = read_weights(w, what="bsrdata checkpoint")
    copy_state(getattr(model, "module", model), state, source=w, target="the model in config.json")


def load(path_dir, map_location="cpu"):
    """Rebuild the network named in ``config.json`` and load its weights -> ``(model, config)`` (eval mode)."""
    from bsrdata.models.registry import create_model

    cfg = read_config(path_dir)
    try:
        model = create_model(cfg["model"]["name"], **model_kwargs(cfg["model"]))
    except TypeError as exc:
        raise BsrError(f"{path_dir}: config.json model arguments do not fit {cfg['model']['name']}: {exc}") from None
    load_state(model, path_dir)
    return model.to(map_location).eval(), cfg


def resolve_dir(path) -> str:
    """The checkpoint folder meant by ``path``: a checkpoint folder, its ``model.safetensors``, or a run
    folder (-> its ``last/``). BsrError naming ``path`` when there is none."""
    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".safetensors"):
        return os.path.dirname(path) or "."
    if os.path.isfile(os.path.join(path, WEIGHTS)):
        return path
    if os.path.isfile(os.path.join(path, "last", WEIGHTS)):
        return os.path.join(path, "last")
    if not os.path.exists(path):
        raise BsrError(f"{path}: no such checkpoint")
    raise BsrError(f"{path}: no {WEIGHTS} (neither a checkpoint folder nor a run folder with last/)")
