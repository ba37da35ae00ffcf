"""Training task ``koalanet``: the three official KOALAnet stages on our shards (docs/baselines.md, "KOALAnet").

``model.stage`` picks the network (the registry name is filled from it; ``model.name`` may be left null):

- 1 -> ``koalanet_ds``: loss.l1_lr·L1(LR, LR̂) + loss.kernel·kernel loss.
- 2 -> ``koalanet_us`` (no KOALA, no kernel input): loss.l1_sr·L1(SR, HR).
- 3 -> ``koalanet``, initialised from ``init.ds_ckpt`` (stage 1) and ``init.us_ckpt`` (stage 2; its trunk,
  filter and RGB branches; the KOALA modules and the kernel branch start fresh): the sum of the three terms;
  the SR loss reaches the DS network.

All L1 terms are in the network's [−1, 1] units, as the official code. Kernel loss (``loss.kernel_loss``):
``mean`` (official) = L1 between the spatial mean of the normalised predicted kernels of a crop and one
target kernel, the mean of the per-pixel G_σ over the crop's LR sites (:func:`bsrdata.models.kernels.mean_kernel`
on :func:`~bsrdata.models.kernels.lr_sites`); ``per_pixel`` (stronger, not official) = L1 between each LR
pixel's kernel and its own centred G_σ. Targets are built in the dataset's ``max_coc`` window and placed in
the d window with their centre on HR 4i (tap p of :func:`bsrdata.models.koalanet.window_offset`), cut and
renormalised where d is too small (the official d 20 cuts 2 taps for max_coc 21).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from bsrdata.errors import BsrError
from bsrdata.models.engine.task import check_choice, check_int, check_number, init_model_config
from bsrdata.models.engine.task_sr import _check_sr_data, _masked_l1, _SRTaskBase, _unwrap

STAGE_MODELS = {1: "koalanet_ds", 2: "koalanet_us", 3: "koalanet"}
ARCH_KEYS = {1: ("d", "ds_nf", "placement"), 2: ("us_nf", "nb", "up_kernel")}


def _to_pm1(x):
    return x * 2.0 - 1.0


def kernel_targets(blur_hr, d: int, p: int, max_coc: int, mode: str, scale: int = 4, downsample: str = "direct"):
    """Kernel-loss targets from the HR σ map ``blur_hr`` (N, 1, H, W) or (N, H, W): ``mean`` -> (N, d²) (one
    kernel per crop), ``per_pixel`` -> (N, d², h, w); each a G_σ of ``max_coc`` taps placed at tap ``p``."""
    from bsrdata.models.kernels import gaussian_kernels, lr_sites, mean_kernel
    from bsrdata.models.koalanet import place_kernel

    sig = blur_hr.reshape(blur_hr.shape[0], *blur_hr.shape[-2:])
    sig = lr_sites(sig if sig.is_floating_point() else sig.float(), scale, downsample)
    if mode == "mean":
        k = place_kernel(mean_kernel(sig, max_coc), d, p)
        return k.reshape(k.shape[0], d * d)
    k = place_kernel(gaussian_kernels(sig, max_coc), d, p)  # (N, h, w, d, d)
    n, h, w = k.shape[:3]
    return k.reshape(n, h, w, d * d).permute(0, 3, 1, 2)


class KOALAnetTask(_SRTaskBase):
    """``bsr train koalanet``: stage 1 / 2 / 3 by ``model.stage``."""

    name = "koalanet"
    defaults = {
        "model": {"name": None, "stage": 1, "d": 20, "ds_nf": 64, "us_nf": 64, "nb": 12, "n_koala": 5,
                  "koala_k": 7, "up_kernel": 5, "placement": "official", "init_gain": 1.0},
        "init": {"ds_ckpt": None, "us_ckpt": None},
        "data": {"train_split": "train", "val_split": "test", "crop": 256, "hflip": True, "rot90": True,
                 "zoom": [1], "zoom_rule": "physical"},
        "loss": {"l1": 1.0, "l1_lr": 1.0, "kernel": 1.0, "kernel_loss": "mean"},
        "eval": {"crop_border": 0},
        "adaptation": {},  # filled by resolve: the choices recorded with the checkpoint and the bench results
    }
    # official: Adam (TF defaults .9/.999), lr 1e-4, x0.1 at 80 % and 90 % of 200k updates, batch 8, LR 64
    train_defaults = {"lr": 1.0e-4, "betas": [0.9, 0.999], "batch_size": 8, "iterations": 200000,
                      "schedule": "multistep", "milestones": [160000, 180000], "gamma": 0.1, "warmup": 0}

    def check_config(self, cfg, where):
        """Pure checks of the dict (``loss.l1`` is the SR term's weight)."""
        super().check_config(cfg, where)
        m = cfg["model"]
        check_choice(m["stage"], "model.stage", where, (1, 2, 3))
        if m["name"] is not None and m["name"] != STAGE_MODELS[m["stage"]]:
            raise BsrError(f"{where}: model.name {m['name']!r} does not fit model.stage {m['stage']} "
                           f"({STAGE_MODELS[m['stage']]}; leave model.name null)")
        check_choice(m["placement"], "model.placement", where, ("official", "centred"))
        check_int(m["d"], "model.d", where, lo=7 if m["placement"] == "centred" else 4)
        if m["placement"] == "centred" and m["d"] % 2 == 0:
            raise BsrError(f"{where}: model.d must be odd for model.placement centred (window centred on HR 4i), "
                           f"got {m['d']}")
        for k in ("ds_nf", "us_nf"):
            check_int(m[k], f"model.{k}", where, lo=4)
            if m[k] % 4:
                raise BsrError(f"{where}: model.{k} must be a multiple of 4, got {m[k]}")
        check_int(m["nb"], "model.nb", where, lo=1)
        check_int(m["n_koala"], "model.n_koala", where, lo=0, hi=m["nb"])
        for k in ("koala_k", "up_kernel"):
            check_int(m[k], f"model.{k}", where, lo=1)
            if m[k] % 2 == 0:
                raise BsrError(f"{where}: model.{k} must be odd, got {m[k]}")
        check_number(m["init_gain"], "model.init_gain", where, lo=0, open_lo=True)
        loss = cfg["loss"]
        for k in ("l1_lr", "kernel"):
            check_number(loss[k], f"loss.{k}", where, lo=0)
        check_choice(loss["kernel_loss"], "loss.kernel_loss", where, ("mean", "per_pixel"))
        for key in ("ds_ckpt", "us_ckpt"):
            v = cfg["init"][key]
            if v is not None and (not isinstance(v, str) or not v):
                raise BsrError(f"{where}: init.{key} must be a checkpoint folder, got {v!r}")
            if v is not None and m["stage"] != 3:
                raise BsrError(f"{where}: init.{key} is only used by model.stage 3")
        _check_sr_data(cfg, where)
        crop = cfg["data"]["crop"]
        for c in ([crop, crop] if isinstance(crop, int) else crop or []):
            if c % 16:
                raise BsrError(f"{where}: data.crop must be a multiple of 16 (LR multiple of 4 for the U-Net), "
                               f"got {crop!r}")

    def resolve(self, cfg, where="config"):
        """Fills ``model.name`` from the stage; stage 3 checks that the init checkpoints are stage 1 / 2
        networks with the architecture of this config (reads their config.json)."""

        m = cfg["model"]
        m["name"] = STAGE_MODELS[m["stage"]]
        cfg["adaptation"] = {
            "stage": m["stage"], "window": m["d"], "placement": m["placement"],
            "placement_note": ("window centred on HR 4i (our direct grid)" if m["placement"] == "centred"
                               else "official TF SAME window, centre at HR 4i+1.5"),
            "kernel_loss": cfg["loss"]["kernel_loss"], "kernel_target": "G_sigma of the dataset's max_coc window "
            "at the LR sites, placed at HR 4i in the d window", "range": "[-1, 1] inside the network"}
        for stage, key in ((1, "ds_ckpt"), (2, "us_ckpt")):
            path = cfg["init"][key]
            if not path:
                continue
            mc = init_model_config(path, key, where, (STAGE_MODELS[stage],))
            for k in ARCH_KEYS[stage]:
                if mc.get(k) != m[k]:
                    raise BsrError(f"{path}: model.{k} is {mc.get(k)!r}, this config has {m[k]!r} (init.{key})")
        return cfg

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.registry import create_model

        m = dict(cfg["model"], name=STAGE_MODELS[cfg["model"]["stage"]])
        model = create_model(m["name"], **model_kwargs(m, build=True))
        if m["stage"] == 3:
            if cfg["init"]["ds_ckpt"]:
                _load_part(model.ds, cfg["init"]["ds_ckpt"], "init.ds_ckpt", set())
            if cfg["init"]["us_ckpt"]:
                fresh = {k for k in model.us.state_dict() if k.startswith("kfeat.") or ".mult." in k
                         or ".filt." in k and k.startswith("blocks.")}
                _load_part(model.us, cfg["init"]["us_ckpt"], "init.us_ckpt", fresh)
        return model

    def make_dataset(self, cfg, split, train):
        ds = super().make_dataset(cfg, split, train)
        if train:
            self._max_coc = int(ds.view.attrs.get("max_coc", 21))
            self._downsample = str(ds.view.attrs.get("downsample", "direct"))
        return ds

    def _kernel_loss(self, net, k, blur, cfg):
        from bsrdata.models.koalanet import window_offset

        d = net.d
        p = window_offset(d, net.placement)
        mode = cfg["loss"]["kernel_loss"]
        tgt = kernel_targets(blur, d, p, getattr(self, "_max_coc", 21), mode, net.scale,
                             getattr(self, "_downsample", "direct")).to(k.dtype)
        if mode == "mean":
            return F.l1_loss(k.mean(dim=(2, 3)), tgt)
        return F.l1_loss(k, tgt)

    def training_step(self, model, batch, cfg=None):
        cfg = cfg or self.default_config()
        batch, mask = self._augment(batch, cfg)
        net = _unwrap(model)
        stage = cfg["model"]["stage"]
        lr, hr = _to_pm1(batch["lr"]), _to_pm1(batch["hr"])
        parts, loss = {}, 0.0
        w = cfg["loss"]
        if stage == 2:
            sr = model(lr)
        elif stage == 1:
            k = net.kernels(lr) if model is net else model(lr)
            if model is not net:  # DDP: forward through the wrapper, normalise here
                from bsrdata.models.koalanet import normalise_filters
                k = normalise_filters(k, net.d * net.d)
            recon = net.reconstruct(hr, k)
        else:
            out = model(lr, hr)
            sr, k, recon = out["sr"], out["kernels"], out["lr_recon"]
        if stage in (2, 3):
            parts["l1_sr"] = _masked_l1(sr, hr, None if mask is None else mask)
            loss = loss + w["l1"] * parts["l1_sr"]
        if stage in (1, 3):
            parts["l1_lr"] = F.l1_loss(recon, lr)
            parts["kernel"] = self._kernel_loss(net, k, batch["blur"], cfg)
            loss = loss + w["l1_lr"] * parts["l1_lr"] + w["kernel"] * parts["kernel"]
        return loss, {k_: float(v.detach()) for k_, v in parts.items()}

    @torch.no_grad()
    def evaluate(self, model, root, cfg, groups, *, split=None, limit: int = 0, progress=None) -> dict:
        """Stages 2 / 3: PSNR/SSIM on Y per test group (:meth:`_SRTaskBase.evaluate`). Stage 1 (no SR image):
        over the first ``limit`` (0: all) samples of ``split`` (default test), ``lr_psnr`` = PSNR of LR̂ against
        LR (RGB, [0, 1]) and ``kernel_l1`` = the mean-kernel loss -> ``{split: r, "avg": r}``."""
        if cfg["model"]["stage"] != 1:
            return super().evaluate(model, root, cfg, groups, split=split, limit=limit, progress=progress)
        from bsrdata.dataset import BSRDataset
        from bsrdata.models.koalanet import _pad4, normalise_filters, window_offset

        net = _unwrap(model)
        dev = next(net.parameters()).device
        ds = BSRDataset(root, split or "test")
        self._max_coc = int(ds.view.attrs.get("max_coc", 21))
        self._downsample = str(ds.view.attrs.get("downsample", "direct"))
        n = min(limit, len(ds)) if limit else len(ds)
        was = net.training
        net.eval()
        mse = kl = 0.0
        p = window_offset(net.d, net.placement)
        try:
            for i in range(n):
                s = ds[i]
                lr = s["lr"][None].to(dev)
                x, h, w = _pad4(lr)
                pad = (0, 4 * (x.shape[-1] - w), 0, 4 * (x.shape[-2] - h))
                hr = F.pad(s["hr"][None].to(dev), pad, mode="replicate")
                k = normalise_filters(net(_to_pm1(x)), net.d * net.d)
                rec = ((net.reconstruct(_to_pm1(hr), k) + 1) / 2)[..., :h, :w].clamp(0, 1)
                mse += float(((rec - lr) ** 2).mean())
                tgt = kernel_targets(s["blur"][None, :, :4 * h, :4 * w].to(dev), net.d, p, self._max_coc, "mean",
                                     net.scale, self._downsample)
                kl += float((k[..., :h, :w].mean(dim=(2, 3)) - tgt).abs().mean())
        finally:
            net.train(was)
        import math

        r = {"lr_psnr": 10 * math.log10(1.0 / max(mse / max(n, 1), 1e-12)), "kernel_l1": kl / max(n, 1), "n": n}
        return {split or "test": r, "avg": dict(r)}

    def sr_forward(self, model, lr, s):
        net = _unwrap(model)
        return net.super_resolve(lr)


def _load_part(module, path, what, fresh):
    """Copy a stage checkpoint's tensors into ``module``: every tensor of ``module`` except ``fresh`` must be
    in the file with its shape, and the file may hold nothing else (one BsrError line otherwise)."""
    from bsrdata.models import checkpoint

    if not os.path.exists(path):
        raise BsrError(f"{path}: no such checkpoint ({what})")
    loaded, _ = checkpoint.load(path)
    src = loaded.state_dict()
    own = module.state_dict()
    want = {k for k in own if k not in fresh}
    missing, extra = sorted(want - set(src)), sorted(set(src) - want)
    bad = sorted(k for k in want & set(src) if src[k].shape != own[k].shape)
    if missing or extra or bad:
        first = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                 else f"{bad[0]} has shape {tuple(src[bad[0]].shape)}, needs {tuple(own[bad[0]].shape)}")
        raise BsrError(f"{path}: does not match {what} ({first})")
    with torch.no_grad():
        for k in want:
            own[k].copy_(src[k])
