"""Training task ``dcls`` (docs/baselines.md, "DCLS"): the DCLS network on the dataset's fixed LR/HR pairs.

Loss = ``loss.l1`` · L1(SR, HR) + ``loss.kernel`` · L1(K̂, K*), both parts trained together (one Adam group;
the official lr is the same 4e-4 for estimator and restorer). The kernel target K* needs no σ map: it is
computed from the images as in the DCLS paper (the "reformulated" LR-domain kernel), see
:func:`lr_kernel_target`, with y_blur = the dataset's LR crop and y_clean = the sharp HR sampled like the
dataset's LR (``direct``: HR[0::s, 0::s]; a ``bicubic``-built dataset: the s×s block mean;
:func:`bsrdata.models.kernels.lr_sites`).

Augmentation as the other SR tasks: LR-aligned HR crops (``data.crop``, HR px), grid-aware flips / rot90 of
the whole batch (the moved-in HR border is masked out of the SR loss; the kernel target sees the pair after
re-registration). Official settings (×4 setting 1): batch 64, HR 256, Adam (0.9, 0.99), lr 4e-4, ×0.5 at
200k and 400k, 500k iterations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bsrdata.errors import BsrError
from bsrdata.models.engine.task import check_choice, check_int, check_number
from bsrdata.models.engine.task_sr import _check_sr_data, _masked_l1, _SRTaskBase, _unwrap

MODEL_INT_KEYS = ("nf", "nb", "ng", "reduction", "res_blocks", "est_blocks", "latent", "kernel_hidden")


def lr_kernel_target(y_blur: torch.Tensor, y_clean: torch.Tensor, size: int, eps: float = 1e-20,
                     n: int = 40) -> torch.Tensor:
    """The DCLS kernel target from a blurred / clean LR pair: (N, 3, h, w) each (h, w >= ``size``) ->
    (N, 1, size, size), float64, non-negative, summing to 1.

    Per channel c: K_c = crop_size F⁻¹[conj(Ŷc)·B̂c / (|Ŷc|² + eps)] (the circular ratio B̂c / Ŷc over the whole
    patch, centre tap at (0, 0) moved to the window's centre); then the channel mean, zeroed where the product
    of the three channel kernels is <= 0; then "zeroize negligible": subtract 0.75 × the (n+1)-th largest
    value, clamp to [0, 1], add 1e-20 at the centre, divide by the sum.
    """
    if y_blur.shape != y_clean.shape or y_blur.dim() != 4:
        raise BsrError(f"dcls kernel target: y_blur {tuple(y_blur.shape)} and y_clean {tuple(y_clean.shape)} "
                       "must be the same (N, C, h, w)")
    h, w = y_blur.shape[-2:]
    if min(h, w) < size:
        raise BsrError(f"dcls kernel target: the LR patch {h}x{w} is smaller than the kernel ({size} taps); "
                       "use a larger data.crop")
    r = size // 2
    with torch.autocast(device_type=y_blur.device.type, enabled=False):
        fb = torch.fft.fft2(y_blur.double())
        fc = torch.fft.fft2(y_clean.double())
        ratio = torch.conj(fc) * fb / (fc.real ** 2 + fc.imag ** 2 + eps)
        psf = torch.fft.ifft2(ratio).real
        ks = torch.roll(psf, shifts=(r, r), dims=(-2, -1))[..., :size, :size]  # (N, C, size, size)
        k = ks.mean(1, keepdim=True) * (ks.prod(1, keepdim=True) > 0)
        flat = k.flatten(1)
        kmin = 0.75 * torch.sort(flat, dim=1).values[:, -n - 1]
        k = torch.clamp(k - kmin.view(-1, 1, 1, 1), 0.0, 1.0)
        k[:, :, r, r] += 1e-20
        return k / k.sum(dim=(2, 3), keepdim=True)


def check_dcls_model(m: dict, where: str) -> None:
    """Constructor keywords of ``dcls`` (pure): positive integers, scale 2/3/4, kernel_size odd with filters
    that give it, reduction dividing nf, align none/bicubic."""
    from bsrdata.models.dcls import ALIGNS, check_filters

    if m["name"] != "dcls":
        raise BsrError(f"{where}: model.name must be dcls, got {m['name']!r}")
    for k in MODEL_INT_KEYS:
        check_int(m[k], f"model.{k}", where, lo=1)
    if m["est_nf"] is not None:
        check_int(m["est_nf"], "model.est_nf", where, lo=1)
    check_choice(m["scale"], "model.scale", where, (2, 3, 4))
    check_choice(m["align"], "model.align", where, ALIGNS)
    check_choice(m["img_residual"], "model.img_residual", where, (None, "bicubic"))
    if m["nf"] % m["reduction"] or m["nf"] // m["reduction"] < m["reduction"]:
        raise BsrError(f"{where}: model.reduction {m['reduction']} must divide model.nf {m['nf']} with "
                       f"nf / reduction >= reduction")
    try:
        check_filters(m["kernel_size"], m["filters"])
    except ValueError as exc:
        key = "model.filters" if m["filters"] is not None and str(exc).startswith("filters") else "model.kernel_size"
        raise BsrError(f"{where}: {key}: {exc}") from None


class DCLSTask(_SRTaskBase):
    """DCLS: estimator + restorer, SR L1 + image-derived kernel L1."""

    name = "dcls"
    defaults = {
        "model": {"name": "dcls", "scale": 4, "nf": 64, "nb": 10, "ng": 5, "reduction": 4, "res_blocks": 3,
                  "est_nf": None, "est_blocks": 3, "latent": 256, "kernel_size": 21, "filters": None,
                  "kernel_hidden": 16, "align": "none", "img_residual": None},
        "data": {"train_split": "train", "val_split": "test", "crop": 256, "hflip": True, "rot90": True,
                 "zoom": [1], "zoom_rule": "physical"},
        "loss": {"l1": 1.0, "kernel": 1.0, "kernel_eps": 1e-20},
        "eval": {"crop_border": 0},
    }
    train_defaults = {"lr": 4.0e-4, "betas": [0.9, 0.99], "batch_size": 64, "iterations": 500000,
                      "schedule": "multistep", "milestones": [200000, 400000], "gamma": 0.5, "warmup": 0}

    def check_config(self, cfg, where):
        super().check_config(cfg, where)
        m = cfg["model"]
        check_dcls_model(m, where)
        _check_sr_data(cfg, where)
        check_number(cfg["loss"]["kernel"], "loss.kernel", where, lo=0)
        check_number(cfg["loss"]["kernel_eps"], "loss.kernel_eps", where, lo=0)
        crop = cfg["data"]["crop"]
        if crop is not None:
            hw = (crop, crop) if isinstance(crop, int) else tuple(crop)
            lo = min(hw) // m["scale"]
            if lo < max(m["kernel_size"], 7):
                raise BsrError(f"{where}: data.crop {crop} gives an LR patch of {lo} px, smaller than "
                               f"model.kernel_size {m['kernel_size']} (the kernel target needs the whole kernel)")

    def build_model(self, cfg):
        from bsrdata.models.checkpoint import model_kwargs
        from bsrdata.models.registry import create_model

        return create_model("dcls", **model_kwargs(cfg["model"], build=True))

    @torch.no_grad()
    def kernel_target(self, lr, hr, size: int, scale: int = 4, eps: float = 1e-20):
        """K* of a batch: ``lr`` (N, 3, h, w), ``hr`` (N, 3, s·h, s·w) in [0, 1] -> (N, 1, size, size) float64;
        y_clean = ``hr`` on the dataset's LR grid (``direct``: HR[0::s, 0::s]; else the s×s block mean)."""
        from bsrdata.models.kernels import lr_sites

        grid = "direct" if getattr(self, "_direct", True) else "bicubic"
        return lr_kernel_target(lr, lr_sites(hr, scale, grid), size, eps=eps)

    def training_step(self, model, batch, cfg=None):
        batch, mask = self._augment(batch, cfg)
        out = model(batch["lr"])
        loss_cfg = (cfg or {}).get("loss", self.defaults["loss"])
        l_sr = _masked_l1(out["sr"], batch["hr"], mask)
        k_hat = out["kernel"].float()
        scale = int(getattr(self, "_scale", _unwrap(model).scale))
        target = self.kernel_target(batch["lr"], batch["hr"], k_hat.shape[-1], scale,
                                    float(loss_cfg["kernel_eps"])).to(k_hat.dtype)
        l_k = F.l1_loss(k_hat, target)
        loss = float(loss_cfg["l1"]) * l_sr + float(loss_cfg["kernel"]) * l_k
        return loss, {"l1": float(l_sr.detach()), "kernel": float(l_k.detach())}

    def sr_forward(self, model, lr, s):
        return _unwrap(model).super_resolve(lr)
