"""Stage 1: CMOS (blur map + semantics) on the shards; also the single-task variants (``model.name``
``cmos_blur`` / ``cmos_seg``). Config sections: ``model``, ``data``, ``loss`` (+ the common ``train``)."""

from __future__ import annotations

import math

import numpy as np
import torch

from bsrdata.errors import BsrError
from bsrdata.metrics import DEFAULT_MIOU, MIOU_DEFINITIONS
from bsrdata.models.engine.task import Task, check_choice, check_int, check_number
from bsrdata.models.losses import cmos_loss

CMOS_MODELS = ("cmos", "cmos_blur", "cmos_seg")


def dataset_num_classes(manifest):
    """The class count a built dataset declares (a :class:`bsrdata.manifest.Manifest`: ``source.num_classes``,
    else ``attrs["num_classes"]``), or None."""
    return manifest.num_classes


def check_cmos_model(m: dict, where: str, prefix: str = "model.", name: str | None = None) -> None:
    """Constructor keywords of ``cmos`` / ``cmos_blur`` / ``cmos_seg`` (``m``: the model section or the
    chain's ``cmos_kw``; keys absent from ``m`` are not checked): ``num_classes`` >= 2 when the network
    segments (>= 1 for ``cmos_blur``), ``gia`` switches true/false, ``window`` two positive integers (h, w),
    ``width`` the HRNet channel multiplier in (0, 4], ``backbone_weights`` null or a file name,
    ``window_merge`` fixed or legacy, ``backbone_init`` public or torch."""
    name = name or m.get("name")
    if "num_classes" in m:
        check_int(m["num_classes"], f"{prefix}num_classes", where, lo=1 if name == "cmos_blur" else 2)
    gia = m.get("gia") or {}
    if not isinstance(gia, dict):
        raise BsrError(f"{where}: {prefix}gia must be a mapping of switches")
    bad = set(gia) - {"flow", "channel", "spatial"}
    if bad:
        raise BsrError(f"{where}: unknown key '{prefix}gia.{sorted(bad)[0]}' (known: channel, flow, spatial)")
    for k, v in gia.items():
        if not isinstance(v, bool):
            raise BsrError(f"{where}: {prefix}gia.{k} must be true or false, got {v!r}")
    if "window" in m:
        w = m["window"]
        if not isinstance(w, (list, tuple)) or len(w) != 2 or not all(
                isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in w):
            raise BsrError(f"{where}: {prefix}window must be two positive integers [h, w], got {w!r}")
    if "width" in m:
        check_number(m["width"], f"{prefix}width", where, lo=0, hi=4, open_lo=True)
    if "window_merge" in m:
        check_choice(m["window_merge"], f"{prefix}window_merge", where, ("fixed", "legacy"))
    if "backbone_init" in m:
        check_choice(m["backbone_init"], f"{prefix}backbone_init", where, ("public", "torch"))
    bw = m.get("backbone_weights")
    if bw is not None and (not isinstance(bw, str) or not bw):
        raise BsrError(f"{where}: {prefix}backbone_weights must be null or a weights file name, got {bw!r}")


def check_crop(c, key: str, where: str, allow_none: bool = False) -> None:
    """``data.crop``: a positive integer (square) or [h, w] positive integers (or null where allowed)."""
    if c is None and allow_none:
        return
    ok = (isinstance(c, int) and not isinstance(c, bool) and c >= 1) or (
        isinstance(c, (list, tuple)) and len(c) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in c))
    if not ok:
        raise BsrError(f"{where}: {key} must be a positive integer or [h, w]{' or null' if allow_none else ''}, "
                       f"got {c!r}")


def check_zoom(z, where: str) -> None:
    """``data.zoom``: a non-empty list of zoom factors >= 1."""
    if not isinstance(z, (list, tuple)) or not z or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 1 for x in z):
        raise BsrError(f"{where}: data.zoom must be a non-empty list of factors >= 1, got {z!r}")


class CMOSTask(Task):
    name = "cmos"
    defaults = {
        "model": {"name": "cmos", "num_classes": 40, "gia": {}, "window": [15, 20], "width": 1.0,
                  "backbone_weights": None, "window_merge": "fixed", "backbone_init": "public"},
        "data": {"train_split": "train", "val_split": "test", "crop": [480, 640], "hflip": True,
                 "zoom": [1, 1.2, 1.5], "zoom_rule": "physical"},
        "loss": {"aux_weight": 0.5, "blur_weight": 1.0, "seg_weight": 1.0},
        # start the blur outputs' bias at the mean σ of the first N training samples (0 = off). With L1 and
        # Adam a bias moves about lr per step, so from 0 it needs thousands of steps to reach the mean σ.
        "init": {"blur_bias_samples": 64},
        # mIoU definition of validation (bsrdata.metrics.MIOU_DEFINITIONS): public = the CMOS test code
        "eval": {"miou": "public"},
    }

    def check_config(self, cfg, where):
        super().check_config(cfg, where)
        if cfg["model"]["name"] not in CMOS_MODELS:
            raise BsrError(f"{where}: model.name must be one of {', '.join(CMOS_MODELS)} for task cmos, "
                           f"got {cfg['model']['name']!r}")
        check_cmos_model(cfg["model"], where)
        d = cfg["data"]
        check_crop(d["crop"], "data.crop", where, allow_none=True)
        check_zoom(d["zoom"], where)
        check_choice(d["zoom_rule"], "data.zoom_rule", where, ("physical", "paper"))
        if not isinstance(d["hflip"], bool):
            raise BsrError(f"{where}: data.hflip must be true or false, got {d['hflip']!r}")
        for k, v in cfg["loss"].items():
            check_number(v, f"loss.{k}", where, lo=0)
        check_int(cfg["init"]["blur_bias_samples"], "init.blur_bias_samples", where, lo=0)
        check_choice(cfg["eval"]["miou"], "eval.miou", where, MIOU_DEFINITIONS)

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.registry import create_model

        kw = model_kwargs(cfg["model"], build=True)
        kw["window"] = tuple(kw["window"])
        return create_model(cfg["model"]["name"], **kw)


    def make_dataset(self, cfg, split, train):
        from bsrdata.dataset import BSRDataset

        d = cfg["data"]
        if train:
            # uint8 items: the trainer makes the float batch on the device (bsrdata.dataset.to_float)
            return BSRDataset(d["root"], split, crop=d["crop"], hflip=d["hflip"], zoom=tuple(d["zoom"]),
                              zoom_rule=d["zoom_rule"], seed=cfg["train"]["seed"], output="uint8")
        return BSRDataset(d["root"], split)

    def check_data(self, cfg, dataset):
        name = cfg["model"]["name"]
        if name != "cmos_blur" and not dataset.has_labels:
            raise BsrError(f"{dataset.root}: split '{dataset.split}' has no segmentation labels, which "
                           f"{name} needs (train model.name: cmos_blur instead)")
        n = dataset_num_classes(dataset.view.manifest)
        if name != "cmos_blur" and n is not None and n != cfg["model"]["num_classes"]:
            raise BsrError(f"{dataset.root}: dataset has {n} classes, config model.num_classes is "
                           f"{cfg['model']['num_classes']}")

    def init_from_data(self, model, dataset, cfg):
        n = min(int(cfg.get("init", {}).get("blur_bias_samples", 0) or 0), len(dataset))
        net = getattr(model, "module", model)
        if not n or not hasattr(net, "final") or "blur" not in net.final:
            return {}
        view = getattr(dataset, "view", None)
        vals = [float(np.mean((view[i] if view is not None else dataset[i])["blur"])) for i in range(n)]
        mean = float(np.mean(vals))
        with torch.no_grad():
            net.final["blur"][-1].bias.fill_(mean)
            net.aux["blur"].bias.fill_(mean)
        return {"blur_bias": mean}

    def training_step(self, model, batch, cfg=None):
        lc = (cfg or self.default_config())["loss"]
        out = model(batch["lr"])
        return cmos_loss(out, batch["blur"], batch["seg"], aux_weight=lc["aux_weight"],
                         blur_weight=lc["blur_weight"], seg_weight=lc["seg_weight"])

    @torch.no_grad()
    def evaluate(self, model, root, cfg, groups, *, split="test", limit=0, progress=None):
        """Blur-map PSNR/SSIM (÷ σ_max, prediction unclipped; mean over images) and mIoU (%, one confusion
        matrix per group, 255 ignored, definition ``eval.miou``) per group, plus ``"avg"`` (mean over groups).

        ``groups``: list of test group numbers, or None for the whole ``split`` (row named after it).
        A sample shared by several groups (same key and rendering) is predicted once.
        """
        miou = (cfg or {}).get("eval", {}).get("miou", DEFAULT_MIOU)
        return evaluate_cmos(model, root, groups, split=split, limit=limit, progress=progress, miou=miou)

    def conventions(self, cfg):
        return _cmos_conventions(cfg)


def _cmos_conventions(cfg):
    from bsrdata.manifest import load_manifest
    from bsrdata.metrics import eval_conventions

    attrs = load_manifest(cfg["data"]["root"]).attrs or {}
    smax = float(attrs.get("sigma_max", (attrs.get("max_coc", 21) - 1) / 4))  # as BenchData reads it
    name = cfg["model"]["name"]
    return eval_conventions(sigma_max=smax if name != "cmos_seg" else None,
                            miou=cfg.get("eval", {}).get("miou", DEFAULT_MIOU) if name != "cmos_blur" else None,
                            num_classes=cfg["model"].get("num_classes"))


def _num_classes(model):
    return getattr(getattr(model, "module", model), "num_classes", None)


@torch.no_grad()
def evaluate_cmos(model, root, groups, *, split="test", limit=0, progress=None, miou=DEFAULT_MIOU, on_unit=None):
    """Blur-map PSNR/SSIM and mIoU per group of ``root`` (see :meth:`CMOSTask.evaluate`) -> ``{g: {"n",
    "blur_psnr", "blur_ssim", "miou"}, "avg": {...}}``. The samples are the benchmark's units
    (:class:`bsrdata.benchmark.BenchData`): each stored rendering is predicted once however many groups
    share it. ``progress(n)`` is called after each prediction; ``on_unit(uid, sample, pred)`` too, with the
    unit's sample dict and ``pred`` = {"blur": σ map (H, W) float64, "seg": labels (H, W)} (the keys the
    model outputs), for stratified scores and figures (``bsr eval cmos --strata/--figures``). ``miou``: the
    definition of the mean (:data:`bsrdata.metrics.MIOU_DEFINITIONS`; ``public`` = the CMOS test code,
    absent classes count 0)."""
    from bsrdata.benchmark import BenchData
    from bsrdata.metrics import ConfusionMatrix, blur_psnr, blur_ssim, check_miou

    check_miou(miou, "miou")
    from bsrdata.models.convert import image_to_tensor

    data = BenchData(root, [int(g) for g in groups]) if groups is not None else BenchData(root, split=split)
    sigma_max = data.sigma_max
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ncls = _num_classes(model)
    rows = {}
    cache = {}
    try:
        for g, uids in data.select(limit).items():
            psnrs, ssims = [], []
            cm = None
            for u in uids:
                if u not in cache:
                    s = data.load(u)
                    out = model(image_to_tensor(s["lr"], device))
                    res = {}
                    if "blur" in out:
                        pred = out["blur"][0, 0].double().cpu().numpy()
                        gt = np.asarray(s["blur"], np.float32).astype(np.float64)
                        res["psnr"] = blur_psnr(pred, gt, sigma_max)
                        res["ssim"] = blur_ssim(pred, gt, sigma_max)
                    seg = s.get("seg")
                    if "seg" in out and seg is not None and (np.asarray(seg) != 255).any():
                        lab = out["seg"][0].argmax(0).cpu().numpy()
                        res["cm"] = ConfusionMatrix(ncls).update(lab, np.asarray(seg).astype(np.int64)).matrix
                    cache[u] = res
                    if on_unit is not None:
                        pred = {}
                        if "blur" in out:
                            pred["blur"] = out["blur"][0, 0].double().cpu().numpy()
                        if "seg" in out:
                            pred["seg"] = out["seg"][0].argmax(0).cpu().numpy()
                        on_unit(u, s, pred)
                    if progress is not None:
                        progress(1)
                res = cache[u]
                if "psnr" in res:
                    psnrs.append(res["psnr"])
                    ssims.append(res["ssim"])
                if "cm" in res:
                    cm = res["cm"].copy() if cm is None else cm + res["cm"]
            row = {"n": len(uids)}
            if psnrs:
                row["blur_psnr"] = float(np.mean(psnrs))
                row["blur_ssim"] = float(np.mean(ssims))
            if cm is not None:
                c = ConfusionMatrix(ncls)
                c.matrix = cm
                row["miou"] = 100.0 * c.miou(miou)
            rows[str(g)] = row
    finally:
        model.train(was_training)
    metrics = sorted({k for r in rows.values() for k in r if k != "n"})
    rows["avg"] = {"n": sum(r["n"] for r in rows.values())}
    for k in metrics:
        vals = [r[k] for key, r in rows.items() if key != "avg" and k in r and not math.isnan(r[k])]
        rows["avg"][k] = float(np.mean(vals)) if vals else math.nan
    return rows
