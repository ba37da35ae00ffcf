"""The blind SR chain (paper §3.3, stage 3; docs/sr.md): CMOS estimates σ and segmentation, RRDB-SFT super-resolves.

``BlindSR(num_classes=40, cmos="cmos", sr="rrdb_sft", cmos_kw=None, sr_kw=None, freeze_cmos=True)``.
Forward ``model(lr)`` with lr float (N, 3, h, w) RGB in [0, 1] returns
``{"sr": (N, 3, 4h, 4w) RGB (not clamped), "blur": (N, 1, 4h, 4w) σ in HR px (not clamped, as the authors'
code; ``clamp_blur=True`` clamps it at 0 before it reaches the SR network), "seg": (N, C, 4h, 4w) CMOS logits
or None}``. The SR network receives the argmax class index (the first maximum on ties).

With ``freeze_cmos`` (stage 3) the CMOS parameters do not train and the CMOS stays in eval mode (BatchNorm
uses its running statistics and does not update them) even when the chain is put in training mode; its
forward runs without autograd. ``cmos="cmos_blur"`` with ``sr="rrdb_sft_noseg"`` is the chain without the
semantic prior. Registered as ``blind_sr``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from bsrdata.models.registry import create_model, register_model


class BlindSR(nn.Module):
    def __init__(self, num_classes: int = 40, cmos="cmos", sr="rrdb_sft", cmos_kw: dict | None = None,
                 sr_kw: dict | None = None, freeze_cmos: bool = True, clamp_blur: bool = False):
        """``cmos`` / ``sr``: registry names (built with ``*_kw``) or already built networks."""
        super().__init__()
        self.num_classes = int(num_classes)
        self.cmos = cmos if isinstance(cmos, nn.Module) else create_model(cmos, num_classes=num_classes,
                                                                             **(cmos_kw or {}))
        self.sr = sr if isinstance(sr, nn.Module) else create_model(sr, num_classes=num_classes, **(sr_kw or {}))
        self.uses_seg = bool(getattr(self.sr, "use_seg", True))
        if self.uses_seg and "seg" not in getattr(self.cmos, "tasks", ("blur", "seg")):
            raise ValueError("blind_sr: the SR network needs a segmentation map but the CMOS predicts none")
        if self.uses_seg and getattr(self.sr, "num_classes", num_classes) != getattr(self.cmos, "num_classes",
                                                                                   num_classes):
            raise ValueError("blind_sr: the CMOS and the SR network have different class counts")
        self.freeze_cmos = bool(freeze_cmos)
        self.clamp_blur = bool(clamp_blur)
        if self.freeze_cmos:
            for p in self.cmos.parameters():
                p.requires_grad_(False)
            self.cmos.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_cmos:
            self.cmos.eval()
        return self

    def estimate(self, lr: torch.Tensor):
        """CMOS estimates: σ (N, 1, 4h, 4w) (clamped at 0 with ``clamp_blur``) and the segmentation logits
        (N, C, 4h, 4w) or None."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_cmos):
            out = self.cmos(lr)
        blur = out["blur"].clamp(min=0) if self.clamp_blur else out["blur"]
        seg = out["seg"] if (self.uses_seg and "seg" in out) else None
        return blur, seg

    def forward(self, lr: torch.Tensor) -> dict:
        blur, seg = self.estimate(lr)
        idx = seg.argmax(1) if seg is not None else None
        return {"sr": self.sr(lr, blur, idx), "blur": blur, "seg": seg}


@register_model("blind_sr")
def blind_sr(**kw) -> BlindSR:
    return BlindSR(**kw)
