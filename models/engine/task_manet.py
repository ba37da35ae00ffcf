"""Training task ``manet`` (docs/baselines.md, "MANet"): the three stages of MANet on the dataset's shards.

``model.stage`` picks the network and the loss:

1. ``manet_estimator``: L1(k̂·``loss.kernel_scale``, k·``loss.kernel_scale``) over all elements, divided again
   by the number of HR pixels H·W of the crop (the official loss scaling). The target of an HR pixel p is the
   centred G_σ(p) of the dataset's σ map in the K×K window (:func:`bsrdata.models.kernels.gaussian_kernels`).
   ``loss.kernel_sites``: ``hr`` compares the LR pixel's kernel with the target of every HR pixel of its s×s
   block (the official nearest ×s "stretch"; N·H·W·K² values), ``lr`` only with the target at the LR site
   (HR pixel s·i on the direct grid; N·h·w·K² values, s² times less memory: for K = 61 crops).
2. ``manet_rrdb_sft``: L1(SR, HR), the restorer conditioned per LR pixel on the codes Pᵀ·vec(G_σ) of the σ
   map at the LR sites (space-variant; the official code broadcasts one code per patch).
3. ``manet``: the stage-1 estimator (``init.estimator_ckpt``, frozen, under ``no_grad``) feeds its kernels'
   codes to the restorer (``init.sr_ckpt``, fine-tuned), L1(SR, HR); the optimiser gets only the restorer.

``model.name`` is filled from the stage by :meth:`ManetTask.resolve`, which also keeps only the chosen
network's constructor keywords in ``model`` (checkpoints rebuild from them), fills ``model.pca_sigma_max``
from the dataset's ``attrs.sigma_max`` when it is null, and for stage 3 takes the architecture from the two
checkpoints. PCA: ``model.pca`` ``gaussian`` (refit on G_σ over the dataset's σ range) or ``external`` with
``init.pca_file`` (e.g. the official ``pca_matrix_aniso21_15_x4.pth``, 441×15); the choice is in the model's
config. Stage 1 validation: kernel L1 (per kernel, Σ|k̂ − G_σ|) and σ̂ vs σ (Pearson r, MAE) at the LR sites;
stages 2-3: PSNR/SSIM on Y like the other SR tasks.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from bsrdata.errors import BsrError
from bsrdata.models.engine.task import check_choice, check_int, check_number, init_model_config
from bsrdata.models.engine.task_sr import _check_sr_data, _SRTaskBase

STAGE_MODEL = {1: "manet_estimator", 2: "manet_rrdb_sft", 3: "manet"}
MODEL_STAGE = {v: k for k, v in STAGE_MODEL.items()}
EST_KEYS = ("kernel_size", "est_nf", "est_nb", "split", "scale")
SR_KEYS = ("nf", "nb", "gc", "code_length", "kernel_size", "scale", "pca", "pca_sigma_max", "img_residual")
STAGE_KEYS = {1: EST_KEYS, 2: SR_KEYS, 3: tuple(dict.fromkeys(EST_KEYS + SR_KEYS)) + ("output_shift",)}


def kernel_targets(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-pixel centred G_σ: ``sigma`` (...) -> (..., K²) float32, one kernel computed per distinct σ."""
    from bsrdata.models.kernels import gaussian_kernels

    vals, inv = torch.unique(sigma.detach().float(), return_inverse=True)
    k = gaussian_kernels(vals.double(), kernel_size).reshape(vals.numel(), -1).float()
    return k[inv]


def kernel_loss(pred: torch.Tensor, sigma_hr: torch.Tensor, kernel_size: int, scale: int, sites: str = "hr",
                factor: float = 1e4, mask: torch.Tensor | None = None, downsample: str = "direct") -> torch.Tensor:
    """The stage-1 loss: ``pred`` (N, K², h, w) LR-pixel kernels, ``sigma_hr`` (N, 1, H, W) σ in HR px.

    mean |pred·factor − target·factor| over the compared elements, divided by H·W. ``sites`` ``hr``: every HR
    pixel against its LR pixel's kernel (nearest ×scale), ``mask`` (1, 1, H, W) excluding HR pixels;
    ``lr``: only the LR sites (:func:`bsrdata.models.kernels.lr_sites` with ``downsample``)."""
    from bsrdata.models.kernels import lr_sites

    hh, ww = sigma_hr.shape[-2:]
    if sites == "hr":
        p = pred.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3).permute(0, 2, 3, 1)
        t = kernel_targets(sigma_hr[:, 0], kernel_size)  # (N, H, W, K²)
        d = (p.float() - t).abs() * factor
        if mask is not None and not bool(mask.all()):
            m = mask[:, 0, :, :, None].to(d.dtype).expand_as(d)
            err = (d * m).sum() / m.sum().clamp_min(1)
        else:
            err = d.mean()
    elif sites == "lr":
        s = lr_sites(sigma_hr[:, 0], scale, downsample)
        t = kernel_targets(s, kernel_size)  # (N, h, w, K²)
        err = ((pred.permute(0, 2, 3, 1).float() - t).abs() * factor).mean()
    else:
        raise BsrError(f"loss.kernel_sites: {sites!r} is not hr or lr")
    return err / float(hh * ww)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else float("nan")


def _unwrap(model):
    return getattr(model, "module", model)


def _read_pca(path: str, kernel_size: int, code_length: int) -> torch.Tensor:
    """A PCA basis file (torch .pth or .safetensors: one tensor (K², n), or a state dict with ``pca_matrix``)."""
    from bsrdata.models.weights import read_weights

    if not os.path.isfile(path):
        raise BsrError(f"{path}: no such PCA file (init.pca_file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = None
    if not isinstance(obj, torch.Tensor):
        sd = read_weights(path, what="PCA basis")
        obj = sd.get("pca_matrix", next(iter(sd.values())) if len(sd) == 1 else None)
    if not isinstance(obj, torch.Tensor) or obj.numel() != kernel_size ** 2 * code_length:
        shape = tuple(obj.shape) if isinstance(obj, torch.Tensor) else None
        raise BsrError(f"{path}: not a PCA basis of {kernel_size ** 2}x{code_length} (found {shape}; "
                       "init.pca_file)")
    return obj.reshape(kernel_size ** 2, code_length).float()


class ManetTask(_SRTaskBase):
    """MANet stages 1-3 (``model.stage``); see the module docstring."""

    name = "manet"
    defaults = {
        "model": {"stage": 1, "name": None, "kernel_size": 21, "est_nf": 128, "est_nb": 1, "split": 2,
                  "nf": 64, "nb": 10, "gc": 32, "code_length": 15, "scale": 4, "pca": "gaussian",
                  "pca_sigma_max": None, "img_residual": None, "output_shift": 0.0},
        "init": {"estimator_ckpt": None, "sr_ckpt": None, "pca_file": None},
        "data": {"train_split": "train", "val_split": "test", "crop": 192, "hflip": True, "rot90": True,
                 "zoom": [1], "zoom_rule": "physical"},
        "loss": {"l1": 1.0, "kernel_scale": 1.0e4, "kernel_sites": "hr"},
        "eval": {"crop_border": 0},
    }
    train_defaults = {"lr": 2.0e-4, "betas": [0.9, 0.999], "batch_size": 16, "iterations": 300000,
                      "schedule": "multistep", "milestones": [100000, 150000, 200000, 250000], "gamma": 0.5}

    # ------------------------------------------------------------------ config
    def check_config(self, cfg, where):
        """Pure checks of the dict (the checkpoints and the PCA file are read by :meth:`resolve`)."""
        super().check_config(cfg, where)
        m = cfg["model"]
        stage = m.get("stage")
        if stage is None:  # a resolved config (checkpoint): the stage follows from the network
            check_choice(m.get("name"), "model.name", where, tuple(MODEL_STAGE))
            stage = MODEL_STAGE[m["name"]]
        else:
            check_choice(stage, "model.stage", where, (1, 2, 3))
            if m.get("name") is not None and m["name"] != STAGE_MODEL[stage]:
                raise BsrError(f"{where}: model.name {m['name']!r} does not train stage {stage} "
                               f"(needs {STAGE_MODEL[stage]} or null)")
        ks = m.get("kernel_size", 21)
        if not isinstance(ks, int) or isinstance(ks, bool) or ks < 3 or ks % 2 == 0:
            raise BsrError(f"{where}: model.kernel_size must be an odd integer >= 3, got {ks!r}")
        for k in ("est_nf", "est_nb", "nf", "nb", "gc", "code_length"):
            if k in m:
                check_int(m[k], f"model.{k}", where, lo=1)
        if "split" in m:
            check_int(m["split"], "model.split", where, lo=2)
        if "code_length" in m and m["code_length"] > ks * ks:
            raise BsrError(f"{where}: model.code_length {m['code_length']} exceeds kernel_size² {ks * ks}")
        if "scale" in m:
            check_choice(m["scale"], "model.scale", where, (2, 3, 4))
        if "pca" in m:
            check_choice(m["pca"], "model.pca", where, ("gaussian", "external"))
        if m.get("pca_sigma_max") is not None:
            check_number(m["pca_sigma_max"], "model.pca_sigma_max", where, lo=0, open_lo=True)
        if "img_residual" in m:
            check_choice(m["img_residual"], "model.img_residual", where, (None, "bicubic"))
        if "output_shift" in m:
            check_number(m["output_shift"], "model.output_shift", where)
        init = cfg["init"]
        for key in ("estimator_ckpt", "sr_ckpt", "pca_file"):
            v = init[key]
            if v is not None and (not isinstance(v, str) or not v):
                raise BsrError(f"{where}: init.{key} must be a path, got {v!r}")
        if stage == 2 and m.get("pca") == "external" and not init["pca_file"] and m.get("stage") is not None:
            raise BsrError(f"{where}: model.pca external needs init.pca_file (a K²xn basis such as the "
                           "official pca_matrix_aniso21_15_x4.pth, 441x15)")
        check_choice(cfg["loss"]["kernel_sites"], "loss.kernel_sites", where, ("hr", "lr"))
        check_number(cfg["loss"]["kernel_scale"], "loss.kernel_scale", where, lo=0, open_lo=True)
        _check_sr_data(cfg, where)

    def resolve(self, cfg, where="config"):
        """Keep only the stage's constructor keywords in ``model`` (with ``name``); fill ``pca_sigma_max``
        from the dataset manifest; stage 3: the architecture from the two checkpoints' config.json."""
        from bsrdata.models.checkpoint import model_kwargs

        m = cfg["model"]
        if m.get("stage") is None:  # already resolved
            return cfg
        stage = int(m["stage"])
        if stage == 3:
            if not (cfg["init"]["estimator_ckpt"] and cfg["init"]["sr_ckpt"]):
                raise BsrError(f"{where}: stage 3 needs init.estimator_ckpt (stage 1) and init.sr_ckpt (stage 2), "
                               "e.g. --set init.estimator_ckpt=RUN1/last --set init.sr_ckpt=RUN2/last")
            for key, want in (("estimator_ckpt", "manet_estimator"), ("sr_ckpt", "manet_rrdb_sft")):
                path = cfg["init"][key]
                mc = init_model_config(path, key, where, (want,))
                kw = model_kwargs(mc)
                if "kernel_size" in kw and key == "sr_ckpt" and kw["kernel_size"] != m["kernel_size"]:
                    raise BsrError(f"{path}: kernel_size {kw['kernel_size']}, the estimator "
                                   f"{cfg['init']['estimator_ckpt']} has {m['kernel_size']}")
                m.update(kw)
        elif stage == 2 and m.get("pca", "gaussian") == "gaussian" and m.get("pca_sigma_max") is None:
            m["pca_sigma_max"] = _dataset_sigma_max(cfg["data"]["root"])
        out = {"name": STAGE_MODEL[stage]}
        out.update({k: m[k] for k in STAGE_KEYS[stage] if k in m})
        if out.get("pca") == "external":
            out["pca_sigma_max"] = None
        cfg["model"] = out
        return cfg

    # ------------------------------------------------------------------ model
    def stage(self, cfg) -> int:
        m = cfg["model"]
        return int(m["stage"]) if m.get("stage") is not None else MODEL_STAGE[m["name"]]

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.engine.task_sr import _load_into
        from bsrdata.models.registry import create_model

        m = cfg["model"]
        if m.get("stage") is not None:  # not resolved (direct use): resolve without reading checkpoints
            if int(m["stage"]) == 3:
                raise BsrError("config: stage 3 must be resolved first (task.resolve reads init.*_ckpt)")
            m = {"name": STAGE_MODEL[int(m["stage"])],
                 **{k: m[k] for k in STAGE_KEYS[int(m["stage"])] if k in m}}
            if m.get("pca_sigma_max") is None and m.get("pca") == "gaussian":
                m["pca_sigma_max"] = 5.0
        model = create_model(m["name"], **model_kwargs(m, build=True))
        stage = MODEL_STAGE[m["name"]]
        pca_file = cfg["init"]["pca_file"]
        if stage == 2 and pca_file:
            model.pca_matrix.copy_(_read_pca(pca_file, model.kernel_size, model.code_length))
        if stage == 3:
            from bsrdata.models import checkpoint

            _load_into(model.estimator, cfg["init"]["estimator_ckpt"], "init.estimator_ckpt (the stage-1 estimator)")
            from bsrdata.models.manet import MANetRRDBSFT

            sr, _ = checkpoint.load(cfg["init"]["sr_ckpt"])
            if not isinstance(sr, MANetRRDBSFT):
                raise BsrError(f"{cfg['init']['sr_ckpt']}: is a {type(sr).__name__} checkpoint, init.sr_ckpt needs "
                               "manet_rrdb_sft")
            sd = sr.state_dict()
            model.pca_matrix.copy_(sd.pop("pca_matrix"))
            model.restorer.load_state_dict(sd, strict=True)
            model.train(True)
        return model

    def param_groups(self, model, cfg):
        net = _unwrap(model)
        if hasattr(net, "restorer"):  # stage 3: the restorer only (the estimator is frozen)
            return [{"params": [p for p in net.restorer.parameters() if p.requires_grad]}]
        return super().param_groups(model, cfg)

    # ------------------------------------------------------------------ training
    def training_step(self, model, batch, cfg=None):
        batch, mask = self._augment(batch, cfg)
        net = _unwrap(model)
        stage = MODEL_STAGE[cfg["model"]["name"]] if cfg and cfg["model"].get("name") else _stage_of(net)
        down = "direct" if getattr(self, "_direct", True) else "bicubic"
        if stage == 1:
            pred = model(batch["lr"])
            loss_cfg = (cfg or {}).get("loss", {})
            loss = kernel_loss(pred, batch["blur"], net.kernel_size, net.scale, loss_cfg.get("kernel_sites", "hr"),
                               float(loss_cfg.get("kernel_scale", 1e4)), mask, down)
            return loss, {"kernel": float(loss.detach())}
        if stage == 2:
            from bsrdata.models.kernels import lr_sites

            code = net.codes_from_sigma(lr_sites(batch["blur"][:, 0], net.scale, down))
            sr = model(batch["lr"], code)
        else:
            sr = model(batch["lr"])["sr"]
        from bsrdata.models.engine.task_sr import _masked_l1

        loss = _masked_l1(sr, batch["hr"], mask) * float((cfg or {}).get("loss", {}).get("l1", 1.0))
        return loss, {"l1": float(loss.detach())}

    def sr_forward(self, model, lr, s):
        net = _unwrap(model)
        if _stage_of(net) == 2:
            from bsrdata.models.kernels import lr_sites

            blur = torch.from_numpy(np.asarray(s["blur"], np.float32))[None].to(lr.device)
            return net(lr, net.codes_from_sigma(lr_sites(blur, net.scale, getattr(self, "_down", "direct"))))
        return net(lr)["sr"]

    def conventions(self, cfg):
        return {} if self.stage(cfg) == 1 else super().conventions(cfg)

    @torch.no_grad()
    def evaluate(self, model, root, cfg, groups, *, split=None, limit: int = 0, progress=None) -> dict:
        """Stages 2-3: PSNR/SSIM (:meth:`_SRTaskBase.evaluate`). Stage 1: per group ``kernel_l1`` (mean over
        LR sites of Σ|k̂ − G_σ|), ``sigma_r`` (Pearson r of σ̂ and σ over the group's pixels), ``sigma_mae``."""
        from bsrdata.benchmark import BenchData

        self._down = str(_attrs(root).get("downsample", "direct"))
        net = _unwrap(model)
        if _stage_of(net) != 1:
            return super().evaluate(model, root, cfg, groups, split=split, limit=limit, progress=progress)
        data = BenchData(root, split=split or "test") if groups is None else BenchData(root, [int(g) for g in groups])
        sel = data.select(limit)
        was = net.training
        net.eval()
        try:
            per_uid = {}
            for uids in sel.values():
                for uid in uids:
                    if uid not in per_uid:
                        per_uid[uid] = estimator_scores(net, data.load(uid), self._down)
        finally:
            net.train(was)
        out = {}
        for g, uids in sel.items():
            out[str(g)] = _pool([per_uid[u] for u in uids])
        out["avg"] = _pool(list(per_uid.values()))
        return out


def estimator_scores(net, sample: dict, downsample: str = "direct") -> dict:
    """One test sample through an estimator -> {"sigma_hat", "sigma" (h, w) arrays, "l1" (h, w) per-kernel L1}."""
    from bsrdata.models.convert import image_to_tensor
    from bsrdata.models.kernels import lr_sites
    from bsrdata.models.manet import kernel_sigma

    dev = next(net.parameters()).device
    lr = image_to_tensor(sample["lr"], dev)
    k = net(lr)  # (1, K², h, w)
    sig = lr_sites(torch.from_numpy(np.asarray(sample["blur"], np.float32)), net.scale, downsample)
    sig = sig[: k.shape[-2], : k.shape[-1]].to(dev)
    t = kernel_targets(sig, net.kernel_size).permute(2, 0, 1)[None]
    l1 = (k.float() - t).abs().sum(1)[0]
    sh = kernel_sigma(k, net.kernel_size)[0, 0]
    return {"sigma_hat": sh.cpu().numpy(), "sigma": sig.cpu().numpy(), "l1": l1.cpu().numpy()}


def _pool(items) -> dict:
    a = np.concatenate([i["sigma_hat"].ravel() for i in items])
    b = np.concatenate([i["sigma"].ravel() for i in items])
    l1 = np.concatenate([i["l1"].ravel() for i in items])
    return {"kernel_l1": float(l1.mean()), "sigma_r": _pearson(a, b), "sigma_mae": float(np.abs(a - b).mean()),
            "n": len(items)}


def _stage_of(net) -> int:
    from bsrdata.models.manet import KernelEstimator, MANetRRDBSFT

    if isinstance(net, KernelEstimator):
        return 1
    return 2 if isinstance(net, MANetRRDBSFT) else 3


def _attrs(root) -> dict:
    from bsrdata.manifest import load_manifest

    return dict(load_manifest(root).attrs or {})


def _dataset_sigma_max(root) -> float:
    a = _attrs(root)
    v = a.get("sigma_max", (a.get("max_coc", 21) - 1) / 4)
    return float(v)


__all__ = ["ManetTask", "kernel_loss", "kernel_targets", "estimator_scores"]
