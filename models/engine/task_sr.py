"""Training tasks of the SR stages (docs/sr.md): ``rrdb-sft`` (stage 2) and ``blind`` (stage 3).

``RRDBSFTTask``: RRDB-SFT on the ground-truth σ map and segmentation, L1 on the SR image. Augmentation:
random HR crops (``data.crop``, LR-aligned), horizontal flips and zoom in the dataset, plus a random
rot90 of each batch (``data.rot90``). ``model.name`` is ``rrdb_sft`` or ``rrdb_sft_noseg`` (Table 6).

``BlindTask``: the chain ``blind_sr``: CMOS (loaded from ``init.cmos_ckpt``, frozen, eval mode with frozen
BatchNorm) feeds σ and the argmax segmentation to RRDB-SFT (initialised from ``init.sr_ckpt``); L1 on SR.

Both score SR with PSNR/SSIM on Y (:mod:`bsrdata.metrics`, ``eval.crop_border``) per test group, each
distinct LR image once (:class:`bsrdata.benchmark.BenchData`).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from bsrdata.dataset import dihedral
from bsrdata.errors import BsrError
from bsrdata.models.engine.task import Task, check_choice, check_int, check_number, init_model_config

SR_MODELS = ("rrdb_sft", "rrdb_sft_noseg")
SR_SCALES = (2, 3, 4)  # PixelShuffle factors the SR head supports (the datasets here are built at 4)
SR_INT_KEYS = ("nf", "nb", "gc", "prior_ch", "sft_hidden", "gia_groups")
SR_KEYS = ("num_classes", "scale", "fusion", "img_residual", "gia_window", "seg_input", "window_merge") + SR_INT_KEYS
CMOS_KW_KEYS = ("gia", "window", "width", "window_merge", "backbone_init")


def check_sr_model(m: dict, where: str, prefix: str = "model.", name: str | None = None) -> None:
    """Constructor keywords of ``rrdb_sft`` / ``rrdb_sft_noseg`` (``m``: the model section or the chain's
    ``sr_kw``; keys absent from ``m`` are not checked): ``num_classes`` >= 1; ``nf``, ``nb``, ``gc``,
    ``prior_ch``, ``sft_hidden``, ``gia_groups`` positive integers with ``prior_ch`` divisible by
    ``gia_groups`` (the GIA fusion splits the prior channels into groups); ``scale`` in :data:`SR_SCALES`;
    ``fusion`` gia or sum; ``img_residual`` null, bicubic or bilinear; ``seg_input`` index (the public code:
    raw class index, 255 at void) or scaled (index / num_classes); ``window_merge`` fixed or legacy."""
    name = name or m.get("name")
    if "num_classes" in m:
        check_int(m["num_classes"], f"{prefix}num_classes", where, lo=1)
    for k in SR_INT_KEYS:
        if k in m:
            check_int(m[k], f"{prefix}{k}", where, lo=1)
    if "scale" in m:
        check_choice(m["scale"], f"{prefix}scale", where, SR_SCALES)
    if "fusion" in m:
        check_choice(m["fusion"], f"{prefix}fusion", where, ("gia", "sum"))
    if "img_residual" in m:
        check_choice(m["img_residual"], f"{prefix}img_residual", where, (None, "bicubic", "bilinear"))
    if "seg_input" in m:
        check_choice(m["seg_input"], f"{prefix}seg_input", where, ("index", "scaled"))
    if "window_merge" in m:
        check_choice(m["window_merge"], f"{prefix}window_merge", where, ("fixed", "legacy"))
    if "gia_window" in m:
        w = m["gia_window"]
        if not isinstance(w, (list, tuple)) or len(w) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in w):
            raise BsrError(f"{where}: {prefix}gia_window must be two positive integers [h, w], got {w!r}")
    pc, g = m.get("prior_ch", 64), m.get("gia_groups", 8)
    if name != "rrdb_sft_noseg" and m.get("fusion", "gia") == "gia" and pc % g:
        raise BsrError(f"{where}: {prefix}gia_groups {g} does not divide {prefix}prior_ch {pc}")


def _check_sr_data(cfg: dict, where: str) -> None:
    from bsrdata.models.engine.task_cmos import check_crop, check_zoom

    d = cfg["data"]
    check_crop(d["crop"], "data.crop", where, allow_none=True)
    check_zoom(d["zoom"], where)
    check_choice(d["zoom_rule"], "data.zoom_rule", where, ("physical", "paper"))
    for k in ("hflip", "rot90"):
        if not isinstance(d[k], bool):
            raise BsrError(f"{where}: data.{k} must be true or false, got {d[k]!r}")
    check_number(cfg["loss"]["l1"], "loss.l1", where, lo=0)
    check_int(cfg["eval"]["crop_border"], "eval.crop_border", where, lo=0)


def _dataset_classes(root):
    from bsrdata.manifest import load_manifest

    src = load_manifest(root).source
    n = src.num_classes if src else None
    return int(n) if n else None


def _masked_l1(pred, target, mask):
    if mask is None or bool(mask.all()):
        return F.l1_loss(pred, target)
    m = mask.expand_as(pred)
    return (torch.abs(pred - target) * m).sum() / m.sum()


def _load_into(module, path, what):
    """Copy the weights of the checkpoint at ``path`` into ``module`` (same architecture required)."""
    from bsrdata.models import checkpoint

    if not os.path.exists(path):
        raise BsrError(f"{path}: no such checkpoint ({what})")
    loaded, _ = checkpoint.load(path)
    if type(loaded) is not type(module):
        raise BsrError(f"{path}: is a {type(loaded).__name__} checkpoint, {what} needs {type(module).__name__}")
    try:
        module.load_state_dict(loaded.state_dict(), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise BsrError(f"{path}: does not match {what} ({first[1].strip() if len(first) > 1 else first[0]})") from None


class _SRTaskBase(Task):
    def make_dataset(self, cfg, split, train):
        from bsrdata.dataset import BSRDataset

        d = cfg["data"]
        if train:
            # flips are done per batch in training_step (grid-aware), not by the dataset
            # uint8 items: the trainer makes the float batch on the device (bsrdata.dataset.to_float)
            ds = BSRDataset(d["root"], split, crop=d["crop"], hflip=False, zoom=tuple(d["zoom"]),
                            zoom_rule=d["zoom_rule"], seed=cfg["train"]["seed"], output="uint8")
            self._direct = str(ds.view.attrs.get("downsample", "direct")) == "direct"
            self._scale = ds.scale
            return ds
        return BSRDataset(d["root"], split)

    def _augment(self, batch, cfg):
        """Random flip / rot90 of the whole batch (``data.hflip``, ``data.rot90``) -> (batch, loss mask)."""
        if cfg is None:
            return batch, None
        d = cfg["data"]
        hf = bool(d.get("hflip")) and bool(torch.randint(0, 2, (1,)).item())
        vf = tr = False
        if d.get("rot90"):
            vf = bool(torch.randint(0, 2, (1,)).item())
            square = batch["lr"].shape[-1] == batch["lr"].shape[-2]
            tr = square and bool(torch.randint(0, 2, (1,)).item())
        if not (hf or vf or tr):
            return batch, None
        return dihedral(batch, tr, hf, vf, getattr(self, "_scale", 4), getattr(self, "_direct", True))

    def sr_forward(self, model, lr, sample):
        raise NotImplementedError

    def super_resolve(self, model, s, dev):
        """One sample dict -> uint8 SR image (H, W, 3)."""
        from bsrdata.models.convert import image_to_tensor, tensor_to_image

        return tensor_to_image(self.sr_forward(model, image_to_tensor(s["lr"], dev), s))

    def conventions(self, cfg):
        from bsrdata.metrics import sr_conventions

        return sr_conventions(int(cfg.get("eval", {}).get("crop_border", 0)))

    @torch.no_grad()
    def evaluate(self, model, root, cfg, groups, *, split=None, limit: int = 0, progress=None) -> dict:
        """PSNR/SSIM on Y per test group (each distinct LR image once) -> ``{g: {"psnr", "ssim", "n"},
        "avg": {...}}`` (group keys are strings; the average's ``n`` counts distinct images); with
        ``groups=None`` the whole ``split`` is scored under its name (``{split: r, "avg": r}``).
        ``limit``: only the first N images of each group (or of the split). The scores come from the
        benchmark's loop (:func:`bsrdata.benchmark.score_units`) with the network as a method."""
        from bsrdata.benchmark import BenchData, CallableMethod, score_units, summarise

        crop = int(cfg.get("eval", {}).get("crop_border", 0))
        if groups is None:
            data = BenchData(root, split=split or "test")
        else:
            data = BenchData(root, [int(g) for g in groups])
        sel = data.select(limit)
        todo = list(dict.fromkeys(u for uids in sel.values() for u in uids))
        dev = next(model.parameters()).device
        method = CallableMethod(lambda s: self.super_resolve(model, s, dev), label="eval")
        was_training = model.training
        model.eval()
        bar = progress(len(todo), "eval") if progress else None
        try:
            scores = score_units(data, method, todo, crop_border=crop, bar=bar)
        finally:
            if bar:
                bar.close()
            model.train(was_training)
        summ = summarise(sel, scores)
        out = {str(g): {"psnr": v["psnr"], "ssim": v["ssim"], "n": v["n"]} for g, v in summ["groups"].items()}
        if groups is None:
            return {**out, "avg": dict(out[str(data.group_ids[0])])}
        out["avg"] = {"psnr": summ["avg"]["psnr"], "ssim": summ["avg"]["ssim"], "n": len(todo)}
        return out


class RRDBSFTTask(_SRTaskBase):
    """Stage 2: RRDB-SFT with the true maps."""

    name = "rrdb-sft"
    defaults = {
        "model": {"name": "rrdb_sft", "num_classes": 40, "nf": 64, "nb": 10, "gc": 32, "prior_ch": 64,
                  "sft_hidden": 32, "gia_groups": 8, "fusion": "gia", "scale": 4, "img_residual": None,
                  "seg_input": "index", "window_merge": "fixed"},
        "data": {"train_split": "train", "val_split": "test", "crop": 192, "hflip": True, "rot90": True,
                 "zoom": [1], "zoom_rule": "physical"},
        "loss": {"l1": 1.0},
        "eval": {"crop_border": 0},
    }
    train_defaults = {"lr": 2.0e-4, "betas": [0.9, 0.99], "batch_size": 16, "iterations": 240000,
                      "schedule": "cosine", "warmup": 0}

    def check_config(self, cfg, where):
        super().check_config(cfg, where)
        if cfg["model"]["name"] not in SR_MODELS:
            raise BsrError(f"{where}: model.name must be one of {', '.join(SR_MODELS)}, got {cfg['model']['name']!r}")
        check_sr_model(cfg["model"], where)
        _check_sr_data(cfg, where)

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.registry import create_model

        return create_model(cfg["model"]["name"], **model_kwargs(cfg["model"], build=True))

    def check_data(self, cfg, dataset):
        root = cfg["data"]["root"]
        n = _dataset_classes(root)
        if cfg["model"]["name"] == "rrdb_sft":
            labels = getattr(dataset, "has_labels", True)
            if not (labels() if callable(labels) else labels):
                raise BsrError(f"{root}: the training split has no segmentation labels; rrdb_sft needs them "
                               "(use model.name: rrdb_sft_noseg)")
            if n is not None and n != int(cfg["model"]["num_classes"]):
                raise BsrError(f"{root}: the dataset has {n} classes, model.num_classes is "
                               f"{cfg['model']['num_classes']}")

    def training_step(self, model, batch, cfg=None):
        batch, mask = self._augment(batch, cfg)
        sr = model(batch["lr"], batch["blur"], batch["seg"] if getattr(_unwrap(model), "use_seg", True) else None)
        loss = _masked_l1(sr, batch["hr"], mask)
        return loss, {"l1": float(loss.detach())}

    def sr_forward(self, model, lr, s):
        net = _unwrap(model)
        dev = lr.device
        blur = torch.from_numpy(np.asarray(s["blur"], np.float32))[None, None].to(dev)
        seg = None
        if net.use_seg:
            if s.get("seg") is None:
                raise BsrError("rrdb-sft: the test split has no segmentation labels for the semantic prior")
            seg = torch.from_numpy(np.asarray(s["seg"]).astype(np.int64))[None].to(dev)
        return model(lr, blur, seg)


class BlindTask(_SRTaskBase):
    """Stage 3: frozen CMOS feeding RRDB-SFT; L1 on SR only."""

    name = "blind"
    defaults = {
        "model": {"name": "blind_sr", "num_classes": 0, "cmos": "cmos", "sr": "rrdb_sft", "cmos_kw": {},
                  "sr_kw": {}},
        "init": {"cmos_ckpt": None, "sr_ckpt": None},
        "data": {"train_split": "train", "val_split": "test", "crop": None, "hflip": True, "rot90": False,
                 "zoom": [1, 1.2, 1.5], "zoom_rule": "physical"},
        "loss": {"l1": 1.0},
        "eval": {"crop_border": 0},
    }
    train_defaults = {"lr": 5.0e-5, "betas": [0.9, 0.999], "batch_size": 4, "iterations": 40000,
                      "schedule": "constant", "warmup": 0}

    def check_config(self, cfg, where):
        """Checks names and values of the dict only; the checkpoints are read by :meth:`resolve`."""
        from bsrdata.models.engine.task_cmos import check_cmos_model

        super().check_config(cfg, where)
        m = cfg["model"]
        if m["name"] != "blind_sr":
            raise BsrError(f"{where}: model.name must be blind_sr, got {m['name']!r}")
        if not cfg["init"]["cmos_ckpt"]:
            raise BsrError(f"{where}: init.cmos_ckpt is required (the stage-1 CMOS checkpoint)")
        for key in ("cmos_ckpt", "sr_ckpt"):
            v = cfg["init"][key]
            if v is not None and (not isinstance(v, str) or not v):
                raise BsrError(f"{where}: init.{key} must be a checkpoint folder, got {v!r}")
        check_choice(m["cmos"], "model.cmos", where, ("cmos", "cmos_blur"))
        if m["sr"] not in SR_MODELS:
            raise BsrError(f"{where}: model.sr must be one of {', '.join(SR_MODELS)}")
        check_int(m["num_classes"], "model.num_classes", where, lo=0)
        for part, known, check in (("cmos", CMOS_KW_KEYS, check_cmos_model), ("sr", SR_KEYS, check_sr_model)):
            kw = m[f"{part}_kw"]
            bad = sorted(set(kw) - set(known))
            if bad:
                raise BsrError(f"{where}: unknown key 'model.{part}_kw.{bad[0]}' (known: {', '.join(sorted(known))})")
            check(kw, where, prefix=f"model.{part}_kw.", name=m[part])
        _check_sr_data(cfg, where)

    def resolve(self, cfg, where="config"):
        """Fills the chain's architecture (model.cmos/sr, *_kw, num_classes) from the stage-1/2 checkpoints'
        config.json, so the saved chain rebuilds without them. Reads only those files; returns ``cfg``."""
        from bsrdata.models.checkpoint import model_kwargs

        for part, key in (("cmos", "cmos_ckpt"), ("sr", "sr_ckpt")):
            path = cfg["init"][key]
            if not path:
                continue
            mc = init_model_config(path, key, where, ("cmos", "cmos_blur") if part == "cmos" else SR_MODELS)
            kw = model_kwargs(mc)
            n = kw.pop("num_classes", None)
            cfg["model"][part] = mc["name"]
            cfg["model"][f"{part}_kw"] = kw
            if n and (part == "cmos" or cfg["model"]["sr"] == "rrdb_sft"):
                have = cfg["model"]["num_classes"]
                if have and int(have) != int(n):
                    raise BsrError(f"{path}: has {n} classes, the chain has {have} (model.num_classes)")
                cfg["model"]["num_classes"] = int(n)
        if cfg["model"]["sr"] not in SR_MODELS:
            raise BsrError(f"{where}: model.sr must be one of {', '.join(SR_MODELS)}")
        if not cfg["model"]["num_classes"]:
            raise BsrError(f"{where}: model.num_classes is not set and the checkpoints do not give it")
        return cfg

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.registry import create_model

        try:
            model = create_model("blind_sr", **model_kwargs(cfg["model"], build=True))
        except ValueError as exc:
            raise BsrError(f"config: model: {exc}") from None
        _load_into(model.cmos, cfg["init"]["cmos_ckpt"], "init.cmos_ckpt (the chain's CMOS)")
        if cfg["init"]["sr_ckpt"]:
            _load_into(model.sr, cfg["init"]["sr_ckpt"], "init.sr_ckpt (the chain's RRDB-SFT)")
        model.train(True)  # keeps the frozen CMOS in eval mode
        return model

    def check_data(self, cfg, dataset):
        n = _dataset_classes(cfg["data"]["root"])
        if n is not None and n != int(cfg["model"]["num_classes"]):
            raise BsrError(f"{cfg['data']['root']}: the dataset has {n} classes, the chain "
                           f"{cfg['model']['num_classes']}")

    def training_step(self, model, batch, cfg=None):
        batch, mask = self._augment(batch, cfg)
        out = model(batch["lr"])
        loss = _masked_l1(out["sr"], batch["hr"], mask)
        return loss, {"l1": float(loss.detach())}

    def sr_forward(self, model, lr, s):
        return model(lr)["sr"]


def _unwrap(model):
    return getattr(model, "module", model)
