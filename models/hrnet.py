"""HRNetV2-W18-Small-v2 backbone with both stem convolutions at stride 1 (the CMOS configuration).

Input (N, 3, h, w) float (normalised image); output a list of four maps at scales LR, 1/2, 1/4, 1/8:
(N, 18, h, w), (N, 36, ⌈h/2⌉, ⌈w/2⌉), (N, 72, ...), (N, 144, ...). Stage 1: one module of 2 bottlenecks
(64 -> 256); stages 2/3/4: 1/3/2 modules of 2 BasicBlocks per branch with the usual HRNet exchange units
(upsampling: 1×1 conv + BN + resize to the target branch's size, ``upsample="bilinear"`` with
align_corners=False as the CMOS code, or ``"nearest"`` as the ImageNet classification HRNet; downsampling:
chains of stride-2 3×3 conv + BN). 3,860,720 parameters. Every BatchNorm has momentum ``bn_momentum``
(0.01 as in the CMOS code). ``init="public"`` draws every conv weight from N(0, 0.001²) (the CMOS code's
``init_weights`` before it copies the ImageNet weights); ``init="torch"`` keeps PyTorch's defaults.
Parameter names follow the HRNet ImageNet checkpoint layout (conv1, bn1, conv2, bn2, layer1, transition1,
stage2, ...), so ``load_pretrained`` can take such a file (strides do not change shapes).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.blocks import BN_MOMENTUM, BasicBlock, Bottleneck, make_layer
from bsrdata.models.registry import register_model

W18_SMALL_V2 = {
    "stage1": {"blocks": 2, "channels": 64},
    "stage2": {"modules": 1, "blocks": 2, "channels": (18, 36)},
    "stage3": {"modules": 3, "blocks": 2, "channels": (18, 36, 72)},
    "stage4": {"modules": 2, "blocks": 2, "channels": (18, 36, 72, 144)},
}


def scaled_config(width: float = 1.0) -> dict:
    """W18-Small-v2 with every channel count multiplied by ``width`` (1.0 = the published network)."""
    if width == 1.0:
        return W18_SMALL_V2
    if not 0 < width <= 4:
        raise ValueError(f"width must be in (0, 4], got {width}")
    cfg = {k: dict(v) for k, v in W18_SMALL_V2.items()}
    cfg["stage1"]["channels"] = max(4, int(round(64 * width)))
    for n in (2, 3, 4):
        base = W18_SMALL_V2[f"stage{n}"]["channels"]
        cfg[f"stage{n}"]["channels"] = tuple(max(2, int(round(c * width))) for c in base)
    return cfg


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks followed by all-to-all multi-scale fusion (sum + ReLU)."""

    def __init__(self, channels, blocks: int, upsample: str = "bilinear", momentum: float = BN_MOMENTUM):
        super().__init__()
        if upsample not in ("bilinear", "nearest"):
            raise ValueError(f"upsample must be 'bilinear' or 'nearest', not {upsample!r}")
        self.upsample = upsample
        self.nb = len(channels)
        self.branches = nn.ModuleList([make_layer(BasicBlock, c, c, blocks, momentum=momentum) for c in channels])
        fuse = []
        for i in range(self.nb):
            row = []
            for j in range(self.nb):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False),
                                             nn.BatchNorm2d(channels[i], momentum=momentum)))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        layer = [nn.Conv2d(channels[j], cout, 3, 2, 1, bias=False),
                                 nn.BatchNorm2d(cout, momentum=momentum)]
                        if not last:
                            layer.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layer))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, xs):
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i in range(self.nb):
            y = xs[i]
            for j in range(self.nb):
                if j == i:
                    continue
                z = self.fuse_layers[i][j](xs[j])
                if z.shape[-2:] != y.shape[-2:]:
                    if self.upsample == "bilinear":
                        z = F.interpolate(z, size=y.shape[-2:], mode="bilinear", align_corners=False)
                    else:
                        z = F.interpolate(z, size=y.shape[-2:], mode="nearest")
                y = y + z
            out.append(self.relu(y))
        return out


def _transition(cin_list, cout_list, momentum: float) -> nn.ModuleList:
    layers = []
    for i, cout in enumerate(cout_list):
        if i < len(cin_list):
            if cin_list[i] != cout:
                layers.append(nn.Sequential(nn.Conv2d(cin_list[i], cout, 3, 1, 1, bias=False),
                                            nn.BatchNorm2d(cout, momentum=momentum), nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            layers.append(nn.Sequential(nn.Sequential(nn.Conv2d(cin_list[-1], cout, 3, 2, 1, bias=False),
                                                      nn.BatchNorm2d(cout, momentum=momentum),
                                                      nn.ReLU(inplace=True))))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNetV2 backbone returning the four branch outputs (no classification head)."""

    def __init__(self, cfg=W18_SMALL_V2, stem_stride: int = 1, upsample: str = "bilinear",
                 bn_momentum: float = 0.01, init: str = "public"):
        super().__init__()
        if init not in ("public", "torch"):
            raise ValueError(f"init must be 'public' or 'torch', not {init!r}")
        m = float(bn_momentum)
        s1 = cfg["stage1"]
        stem = s1["channels"]
        self.conv1 = nn.Conv2d(3, stem, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=m)
        self.conv2 = nn.Conv2d(stem, stem, 3, stem_stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=m)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, stem, s1["channels"], s1["blocks"], momentum=m)
        prev = [s1["channels"] * Bottleneck.expansion]
        for n in (2, 3, 4):
            s = cfg[f"stage{n}"]
            setattr(self, f"transition{n - 1}", _transition(prev, list(s["channels"]), m))
            setattr(self, f"stage{n}", nn.Sequential(
                *[HighResolutionModule(s["channels"], s["blocks"], upsample, m) for _ in range(s["modules"])]))
            prev = list(s["channels"])
        self.out_channels = tuple(prev)
        if init == "public":
            for mod in self.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.normal_(mod.weight, std=0.001)
                elif isinstance(mod, nn.BatchNorm2d):
                    nn.init.ones_(mod.weight)
                    nn.init.zeros_(mod.bias)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        xs = [self.layer1(x)]
        for n in (2, 3, 4):
            trans = getattr(self, f"transition{n - 1}")
            new = []
            for i, t in enumerate(trans):
                src = xs[i] if i < len(xs) else xs[-1]
                new.append(src if t is None else t(src))
            xs = getattr(self, f"stage{n}")(new)
        return xs


def load_pretrained(model: nn.Module, path: str) -> dict:
    """Load ImageNet weights from a user file (``.safetensors`` or a torch file read with weights_only).

    Tensors whose name and shape match are copied (``strict=False``); the classification head and anything
    else is skipped (the ImageNet HRNet-W18-Small-v2 file: 864 of its 990 tensors are taken, the 126 of
    ``incre_modules``, ``downsamp_modules``, ``final_layer`` and ``classifier`` are skipped). Returns
    ``{"source", "taken": n, "of": total, "loaded": [...], "skipped": [...], "missing": [...]}`` (sorted
    names; "skipped" = the file's names that are unknown or of another shape). BsrError naming the file
    when it gives no tensor at all. Never unpickles.
    """
    from bsrdata.errors import BsrError
    from bsrdata.models.weights import load_state, read_weights

    state = read_weights(path, what="HRNet")
    rep = load_state(model, state, source=str(path), strict=False, target="HRNet")
    if not rep.loaded:
        raise BsrError(f"{path}: no tensor of this file fits the HRNet backbone ({len(state)} tensors, "
                       f"e.g. {', '.join(sorted(state)[:3])})")
    skipped = rep.unexpected + [k for k, _, _ in rep.mismatched]
    return {"source": str(path), "taken": len(rep.loaded), "of": len(state), "loaded": sorted(rep.loaded),
            "skipped": sorted(skipped), "missing": sorted(rep.missing + [k for k, _, _ in rep.mismatched])}


@register_model("hrnet_w18_small_v2")
def hrnet_w18_small_v2(stem_stride: int = 1, pretrained: str | None = None, upsample: str = "bilinear",
                       bn_momentum: float = 0.01, init: str = "public"):
    """HRNetV2-W18-Small-v2 as CMOS uses it (stem stride 1, bilinear fuse). ``pretrained``: optional weights file."""
    model = HRNet(W18_SMALL_V2, stem_stride=stem_stride, upsample=upsample, bn_momentum=bn_momentum, init=init)
    if pretrained:
        model.pretrained_report = load_pretrained(model, pretrained)
    return model
