"""CMOS: joint blur-map and semantic estimation from one LR image (paper §3; docs/cmos.md).

``CMOS(num_classes=40)``; forward ``model(lr)`` with lr float (N, 3, h, w) in [0, 1] returns
``{"blur": (N, 1, 4h, 4w) σ in HR pixels (no activation), "seg": (N, C, 4h, 4w) logits,
"aux_blur": (N, 1, 4h, 4w), "aux_seg": (N, C, 4h, 4w)}`` (single-task variants return only their two keys).

Structure (the authors' released network; 15,975,866 parameters for 40 classes, 15,969,776 for 19):
ImageNet normalisation (constants in the input's dtype) -> HRNet-W18-Small-v2 (stride-1 stem, bilinear
fuse; branches x0..x3 with 18/36/72/144 channels at LR, 1/2, 1/4, 1/8) -> per scale and task a head of 2
BasicBlocks, F[s][t]. Top-down for s = 3, 2, 1: cross-modal GIA_m on (F[s][blur], F[s][seg]); GIA_b / GIA_s
fuse each task's GIA_m output with the backbone feature x[s-1] (sum output, on x[s-1]'s grid) as input to
the scale-(s-1) heads. Scale-0 heads also feed 1×1 convs giving the auxiliary outputs. Then cross-modal
GIA_l at each of the 4 scales on the **head outputs** F[s] (not the GIA_m outputs); per task the scales 1..3
are resized to scale 0, concatenated (270 channels) and mapped by 1×1 conv (with bias)-BN-ReLU-1×1 conv to
the output; everything is bilinearly upsampled ×``scale`` at the end. Groups r = 3, 6, 8, 12 at the four
scales. ``gia`` = dict of GIA switches (flow/channel/spatial) for the Table 5 ablations; ``window_merge``
``"fixed"`` | ``"legacy"`` (docs/cmos.md). ``width`` scales every channel count (1.0 = the published network;
0.5 gives a ~4x smaller, faster CPU variant). ``backbone_init`` ``"public"`` (N(0, 0.001²) convs, as the
authors' code before it copies the ImageNet weights) or ``"torch"`` (PyTorch defaults).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.blocks import BasicBlock
from bsrdata.models.gia import GIA
from bsrdata.models.hrnet import HRNet, load_pretrained, scaled_config
from bsrdata.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GROUPS = (3, 6, 8, 12)


def _groups(c: int, n: int) -> int:
    """N groups for C channels: the published N, or the largest divisor of C below it (narrow widths)."""
    return max(d for d in range(1, n + 1) if c % d == 0)


def _head(c: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(c, c), BasicBlock(c, c))


class CMOS(nn.Module):
    """CMOS network; ``tasks`` is ("blur", "seg"), ("blur",) or ("seg",) (Table 7 single-task variants)."""

    def __init__(self, num_classes: int = 40, tasks=("blur", "seg"), gia: dict | None = None,
                 window=(15, 20), scale: int = 4, backbone_weights: str | None = None, width: float = 1.0,
                 window_merge: str = "fixed", backbone_init: str = "public"):
        super().__init__()
        tasks = tuple(tasks)
        if not tasks or any(t not in ("blur", "seg") for t in tasks):
            raise ValueError(f"tasks must be a non-empty subset of ('blur', 'seg'), not {tasks!r}")
        if "seg" in tasks and int(num_classes) < 2:
            raise ValueError("num_classes must be >= 2")
        gia = dict(gia or {})
        unknown = set(gia) - {"flow", "channel", "spatial"}
        if unknown:
            raise ValueError(f"unknown GIA switches {sorted(unknown)}")
        self.tasks, self.num_classes, self.scale = tasks, int(num_classes), int(scale)
        self.window_merge = window_merge
        self.backbone = HRNet(scaled_config(float(width)), stem_stride=1, upsample="bilinear", bn_momentum=0.01,
                              init=backbone_init)
        if backbone_weights:
            self.pretrained_report = load_pretrained(self.backbone, backbone_weights)
        ch = self.backbone.out_channels
        out_ch = {"blur": 1, "seg": self.num_classes}

        def g(i_in1, i_out, output="pair"):
            return GIA(ch[i_in1], ch[i_out], _groups(ch[i_out], GROUPS[i_out]), window=window, output=output,
                       window_merge=window_merge, **gia)

        self.heads = nn.ModuleDict({t: nn.ModuleList([_head(c) for c in ch]) for t in tasks})
        self.aux = nn.ModuleDict({t: nn.Conv2d(ch[0], out_ch[t], 1) for t in tasks})
        self.fuse_down = nn.ModuleDict({t: nn.ModuleList([g(i, i - 1, "sum") for i in (1, 2, 3)]) for t in tasks})
        self.multi = len(tasks) == 2
        if self.multi:
            self.gia_m = nn.ModuleList([g(i, i) for i in (1, 2, 3)])  # index i-1
            self.gia_l = nn.ModuleList([g(i, i) for i in range(4)])
        cat = sum(ch)
        self.final = nn.ModuleDict({
            t: nn.Sequential(nn.Conv2d(cat, cat, 1), nn.BatchNorm2d(cat), nn.ReLU(inplace=True),
                             nn.Conv2d(cat, out_ch[t], 1))
            for t in tasks})

    def normalise(self, lr: torch.Tensor) -> torch.Tensor:
        """(lr − mean) / std per RGB channel, the constants built in ``lr``'s dtype."""
        mean = torch.tensor(IMAGENET_MEAN, dtype=lr.dtype, device=lr.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=lr.dtype, device=lr.device).view(1, 3, 1, 1)
        return (lr - mean) / std

    def forward(self, lr: torch.Tensor) -> dict:
        x = self.backbone(self.normalise(lr))
        feats = {t: [None] * 4 for t in self.tasks}  # head outputs F[s][t]
        for t in self.tasks:
            feats[t][3] = self.heads[t][3](x[3])
        for i in (3, 2, 1):
            inter = {t: feats[t][i] for t in self.tasks}
            if self.multi:
                inter["blur"], inter["seg"] = self.gia_m[i - 1](feats["blur"][i], feats["seg"][i])
            for t in self.tasks:
                feats[t][i - 1] = self.heads[t][i - 1](self.fuse_down[t][i - 1](inter[t], x[i - 1]))
        out_size = (lr.shape[-2] * self.scale, lr.shape[-1] * self.scale)
        up = lambda y: F.interpolate(y, size=out_size, mode="bilinear", align_corners=False)  # noqa: E731
        out = {f"aux_{t}": up(self.aux[t](feats[t][0])) for t in self.tasks}
        if self.multi:
            for i in range(4):
                feats["blur"][i], feats["seg"][i] = self.gia_l[i](feats["blur"][i], feats["seg"][i])
        size0 = x[0].shape[-2:]
        for t in self.tasks:
            ms = [feats[t][0]] + [F.interpolate(f, size=size0, mode="bilinear", align_corners=False)
                                  for f in feats[t][1:]]
            out[t] = up(self.final[t](torch.cat(ms, dim=1)))
        return {k: out[k] for k in ("blur", "seg", "aux_blur", "aux_seg") if k in out}


@register_model("cmos")
def cmos(num_classes: int = 40, **kw):
    """Multi-task CMOS (blur + segmentation)."""
    return CMOS(num_classes=num_classes, tasks=("blur", "seg"), **kw)


@register_model("cmos_blur")
def cmos_blur(num_classes: int = 40, **kw):
    """Single-task blur-map estimator (Table 7); ``num_classes`` accepted and ignored for config symmetry."""
    return CMOS(num_classes=num_classes, tasks=("blur",), **kw)


@register_model("cmos_seg")
def cmos_seg(num_classes: int = 40, **kw):
    """Single-task semantic segmentation (Table 7)."""
    return CMOS(num_classes=num_classes, tasks=("seg",), **kw)
