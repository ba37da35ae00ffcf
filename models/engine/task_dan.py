"""Training task ``dan`` (``bsr train dan``): DAN v1 / v2 on the dataset's fixed pairs (docs/baselines.md, "DAN").

``model.name`` is ``dan_v1`` or ``dan_v2`` (:mod:`bsrdata.models.dan`); ``model.nb`` / ``model.ng`` null mean
the version's official widths and are filled in by :meth:`DANTask.resolve`, as is ``model.pca_sigma_max``
null (the dataset's ``sigma_max``). Loss, as the official code: only the last unrolled loop is supervised,

    loss = loss.l1 · L1(SR_last, HR) + loss.kernel · L1(code_last, Eᵀ·vec(k_GT))    (v1)
    loss = loss.l1 · L1(SR_last, HR) + loss.kernel · L1(k_last, k_GT)               (v2)

and the network's stop-gradients make the first term train the Restorer and the second the Estimator.
DAN estimates one kernel per image; the target k_GT of a training crop comes from its HR σ map
(``kernel.target``): ``mean`` (default) the mean of the per-pixel kernels G_σ(p) over the crop (exact for a
space-invariant crop; the L2-optimal single kernel otherwise), ``median_sigma`` / ``mean_sigma`` a Gaussian
at the crop's median / mean σ. ``pca.file`` (with ``model.pca: file``) loads a PCA basis (k², code_len)
instead of the default refit; its sha256 is recorded in ``pca.sha256``.

Optimiser as the official code: Adam (0.9, 0.99), lr 4e-4 for both parameter groups (the Estimator's group
scaled by ``optim.estimator_lr_scale``, 1: the official lr_E = lr_G), ×0.5 at the milestones. Augmentation and
scoring as the other SR tasks (:class:`bsrdata.models.engine.task_sr._SRTaskBase`: grid-aware flips /
rotations, PSNR/SSIM on Y per test group).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from bsrdata.errors import BsrError
from bsrdata.models.engine.task import check_choice, check_int, check_number
from bsrdata.models.engine.task_sr import _check_sr_data, _masked_l1, _SRTaskBase, _unwrap

DAN_MODELS = ("dan_v1", "dan_v2")
KERNEL_TARGETS = ("mean", "median_sigma", "mean_sigma")
INT_KEYS = ("nf", "code_len", "loops", "est_nf", "est_blocks")


def kernel_target(blur: torch.Tensor, size: int, mode: str = "mean", mask: torch.Tensor | None = None) -> torch.Tensor:
    """One kernel per crop from its HR σ map: ``blur`` (N, 1, H, W) or (N, H, W) σ in HR px -> (N, size, size)
    float32, each summing to 1.

    ``mean``: Σ_p G_σ(p) / P, the mean of the per-pixel kernels (computed as Σ_u w_u·g_u g_uᵀ over the
    distinct σ values u with weights w_u, g the 1-D kernel, so memory is (distinct σ) × size);
    ``median_sigma`` / ``mean_sigma``: G at the median (numpy's, the mean of the two middle values) / mean σ.
    ``mask`` (1 or N, 1, H, W) or (N, H, W): only the pixels where it is non-zero (all when None)."""
    from bsrdata.models.kernels import gaussian_1d, gaussian_kernels

    if mode not in KERNEL_TARGETS:
        raise BsrError(f"kernel.target: must be one of {', '.join(KERNEL_TARGETS)}, got {mode!r}")
    s = blur[:, 0] if blur.dim() == 4 else blur
    s = s.detach().double()
    keep = None
    if mask is not None:
        m = mask[:, 0] if mask.dim() == 4 else mask
        keep = (m != 0).expand_as(s)
    out = []
    for i in range(s.shape[0]):
        v = s[i].reshape(-1) if keep is None else s[i][keep[i]]
        if v.numel() == 0:
            v = torch.zeros(1, dtype=s.dtype, device=s.device)
        if mode == "mean":
            vals, counts = torch.unique(v, return_counts=True)
            g = gaussian_1d(vals, size)
            w = counts.to(g.dtype) / counts.sum()
            out.append((g * w[:, None]).T @ g)
        else:
            sig = torch.quantile(v, 0.5) if mode == "median_sigma" else v.mean()
            out.append(gaussian_kernels(sig, size))
    return torch.stack(out).float()


def read_basis(path: str) -> torch.Tensor:
    """A PCA basis file (``.npy``, or a torch file holding a tensor or a one-tensor dict) -> float32 2-D/3-D."""
    import numpy as np

    if not os.path.isfile(path):
        raise BsrError(f"{path}: no such PCA basis file (pca.file)")
    try:
        if path.endswith(".npy"):
            t = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            t = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(t, dict) and len(t) == 1:
                t = next(iter(t.values()))
    except Exception as exc:
        raise BsrError(f"{path}: unreadable PCA basis file ({type(exc).__name__})") from None
    if not isinstance(t, torch.Tensor) or t.dim() not in (2, 3):
        raise BsrError(f"{path}: the PCA basis must be a (k*k, code_len) tensor (pca.file)")
    return t.float()


def adaptation(cfg: dict) -> dict:
    """``config["adaptation"]``: the choices made to train DAN on these datasets, in words (copied into the
    bench results' provenance)."""
    m, t = cfg["model"], cfg["kernel"]["target"]
    target = {"mean": "mean of the per-pixel G_sigma over the HR crop (exact for space-invariant crops)",
              "median_sigma": "G at the crop's median sigma", "mean_sigma": "G at the crop's mean sigma"}[t]
    if cfg["pca"]["file"]:
        pca = f"basis file {os.path.basename(cfg['pca']['file'])} (sha256 {cfg['pca']['sha256']})"
    else:
        pca = (f"refit on centred G_sigma, sigma evenly in [0, {m['pca_sigma_max']}], {m['code_len']} components, "
               f"{m['kernel_size']}x{m['kernel_size']}; codes without mean subtraction")
    out = {"kernel_target": f"{t}: {target}", "kernel_size": m["kernel_size"], "pca": pca,
           "grid": f"{m['grid']} (LR(i) = HR(4i), the dataset's pairs; no LR synthesis)",
           "supervision": "last of the loops only (official)"}
    if m["img_residual"]:
        out["img_residual"] = f"{m['img_residual']} (not official: SR_t = {m['img_residual']}(LR) + Restorer)"
    return out


class DANTask(_SRTaskBase):
    """``bsr train dan``; see the module docstring."""

    name = "dan"
    defaults = {
        "model": {"name": "dan_v1", "scale": 4, "nf": 64, "nb": None, "ng": None, "code_len": 10,
                  "kernel_size": 21, "loops": 4, "est_nf": 32, "est_blocks": 5, "pca": "gaussian",
                  "pca_sigma_max": None, "grid": "direct", "img_residual": None},
        "data": {"train_split": "train", "val_split": "test", "crop": 256, "hflip": True, "rot90": True,
                 "zoom": [1], "zoom_rule": "physical"},
        "kernel": {"target": "mean"},
        "pca": {"file": None, "sha256": None},
        "loss": {"l1": 1.0, "kernel": 1.0},
        "optim": {"estimator_lr_scale": 1.0},
        "eval": {"crop_border": 0},
    }
    train_defaults = {"lr": 4.0e-4, "betas": [0.9, 0.99], "batch_size": 64, "iterations": 400000,
                      "schedule": "multistep", "milestones": [200000], "gamma": 0.5, "warmup": 0}

    def check_config(self, cfg, where):
        super().check_config(cfg, where)
        m = cfg["model"]
        check_choice(m["name"], "model.name", where, DAN_MODELS)
        check_choice(m["scale"], "model.scale", where, (2, 3, 4))
        for k in INT_KEYS:
            check_int(m[k], f"model.{k}", where, lo=1)
        for k in ("nb", "ng"):
            if m[k] is not None:
                check_int(m[k], f"model.{k}", where, lo=1)
        if m["name"] == "dan_v1" and m["ng"] is not None:
            raise BsrError(f"{where}: model.ng: only dan_v2 has groups (null for dan_v1)")
        k = m["kernel_size"]
        check_int(k, "model.kernel_size", where, lo=1)
        if k % 2 == 0:
            raise BsrError(f"{where}: model.kernel_size must be odd, got {k}")
        if m["code_len"] > k * k:
            raise BsrError(f"{where}: model.code_len {m['code_len']} exceeds model.kernel_size² = {k * k}")
        check_choice(m["pca"], "model.pca", where, ("gaussian", "file"))
        if m["pca_sigma_max"] is not None:
            check_number(m["pca_sigma_max"], "model.pca_sigma_max", where, lo=0, open_lo=True)
        check_choice(m["grid"], "model.grid", where, ("direct", "bicubic"))
        check_choice(m["img_residual"], "model.img_residual", where, (None, "bicubic", "bilinear"))
        check_choice(cfg["kernel"]["target"], "kernel.target", where, KERNEL_TARGETS)
        f = cfg["pca"]["file"]
        if f is not None and (not isinstance(f, str) or not f):
            raise BsrError(f"{where}: pca.file must be a file name or null, got {f!r}")
        if (m["pca"] == "file") != (f is not None):
            raise BsrError(f"{where}: model.pca is {m['pca']!r} but pca.file is {f!r} (use model.pca: file "
                           "together with pca.file, gaussian without)")
        check_number(cfg["loss"]["kernel"], "loss.kernel", where, lo=0)
        check_number(cfg["optim"]["estimator_lr_scale"], "optim.estimator_lr_scale", where, lo=0)
        _check_sr_data(cfg, where)

    def resolve(self, cfg, where="config"):
        """Fills ``model.nb`` / ``model.ng`` (official widths of the version), ``model.pca_sigma_max`` (the
        dataset's ``sigma_max``) and ``pca.sha256`` (of ``pca.file``); reads only the manifest and that file."""
        from bsrdata.models.dan import OFFICIAL

        m = cfg["model"]
        v = m["name"][-2:]
        for k in ("nb", "ng"):
            if m[k] is None:
                m[k] = OFFICIAL[v][k]
        if m["pca_sigma_max"] is None:
            root = cfg["data"].get("root")
            if root is None:
                raise BsrError(f"{where}: model.pca_sigma_max is null and there is no dataset to read it from")
            from bsrdata.manifest import load_manifest

            m["pca_sigma_max"] = float(load_manifest(root).attrs["sigma_max"])
        f = cfg["pca"]["file"]
        if f is not None:
            from bsrdata.fileio import sha256_file

            read_basis(f)
            sha = sha256_file(f)
            if cfg["pca"]["sha256"] not in (None, sha):
                raise BsrError(f"{f}: sha256 {sha[:12]}... differs from pca.sha256 {cfg['pca']['sha256'][:12]}...")
            cfg["pca"]["sha256"] = sha
        cfg["adaptation"] = adaptation(cfg)
        return cfg

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.registry import create_model

        kw = model_kwargs(cfg["model"], build=True)
        if kw.get("pca_sigma_max") is None:
            kw.pop("pca_sigma_max", None)
        model = create_model(cfg["model"]["name"], **kw)
        if cfg["pca"]["file"]:
            try:
                model.set_basis(read_basis(cfg["pca"]["file"]))
            except ValueError as exc:
                raise BsrError(f"{cfg['pca']['file']}: {exc} (pca.file)") from None
        return model

    def param_groups(self, model, cfg):
        """Restorer (lr_G) and Estimator (lr_E = ``optim.estimator_lr_scale`` × lr_G) groups."""
        net = _unwrap(model)
        return [{"params": list(net.restorer.parameters())},
                {"params": list(net.estimator.parameters()),
                 "lr_scale": float(cfg["optim"]["estimator_lr_scale"]) if cfg else 1.0}]

    def targets(self, net, batch, cfg, mask=None):
        """(k_GT (N, k, k), code_GT (N, code_len)) of a batch, float32."""
        mode = cfg["kernel"]["target"] if cfg else "mean"
        k = kernel_target(batch["blur"], net.kernel_size, mode, mask)
        return k, net.encode(k.to(net.encoder.device))

    def training_step(self, model, batch, cfg=None):
        batch, mask = self._augment(batch, cfg)
        net = _unwrap(model)
        out = model(batch["lr"])
        with torch.autocast(device_type=batch["lr"].device.type, enabled=False):
            k_gt, code_gt = self.targets(net, batch, cfg, mask)
            l_sr = _masked_l1(out["sr"].float(), batch["hr"].float(), mask)
            if net.version == "v1":
                l_k = F.l1_loss(out["code"].float(), code_gt)
            else:
                l_k = F.l1_loss(out["kernel"].float(), k_gt)
        w = cfg["loss"] if cfg else {"l1": 1.0, "kernel": 1.0}
        loss = float(w["l1"]) * l_sr + float(w["kernel"]) * l_k
        return loss, {"l1": float(l_sr.detach()), "kernel_l1": float(l_k.detach())}

    def sr_forward(self, model, lr, s):
        return _unwrap(model).super_resolve(lr)
