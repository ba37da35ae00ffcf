"""Training losses (paper §3; docs/cmos.md).

CMOS: ``L = w_b·L1(blur) + w_s·CE(seg, ignore 255) + aux·(L1(aux_blur) + CE(aux_seg))`` with aux = 0.5 as the
public code (the paper writes a plain sum: aux = 1). L1 is the mean absolute σ error over all HR pixels;
CE is the mean over pixels whose label is not 255 (0 when a batch has none). Single-task outputs use only
their own terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def l1_blur(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean |pred − gt| over all pixels; pred, gt (N, 1, H, W) σ in HR pixels."""
    return (pred.float() - gt.float()).abs().mean()


def ce_seg(logits: torch.Tensor, gt: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy averaged over non-ignored pixels; logits (N, C, H, W), gt int64 (N, H, W)."""
    if not bool((gt != ignore_index).any()):
        return logits.float().sum() * 0.0  # keeps the graph (DDP) and gives 0
    return F.cross_entropy(logits.float(), gt, ignore_index=ignore_index)


def cmos_loss(out: dict, blur: torch.Tensor | None, seg: torch.Tensor | None, *, aux_weight: float = 0.5,
              blur_weight: float = 1.0, seg_weight: float = 1.0):
    """Total loss and its parts ``{"l1", "ce", "aux_l1", "aux_ce"}`` (floats) for a CMOS output dict."""
    total = 0.0
    parts = {}
    if "blur" in out:
        l1, al1 = l1_blur(out["blur"], blur), l1_blur(out["aux_blur"], blur)
        total = total + blur_weight * (l1 + aux_weight * al1)
        parts.update(l1=float(l1.detach()), aux_l1=float(al1.detach()))
    if "seg" in out:
        ce, ace = ce_seg(out["seg"], seg), ce_seg(out["aux_seg"], seg)
        total = total + seg_weight * (ce + aux_weight * ace)
        parts.update(ce=float(ce.detach()), aux_ce=float(ace.detach()))
    return total, parts
