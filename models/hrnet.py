"""HRNetV2-W18-Small-v2 backbone with both stem convolutions at stride 1 (the CMOS configuration).

Input (N, 3, h, w) float (normalised image); output a list of four maps at scales LR, 1/2, 1/4, 1/8:
(N, 18, h, w), (N, 36, ⌈h/2⌉, ⌈w/2⌉), (N, 72, ...), (N, 144, ...). Stage 1: one module of 2 bottlenecks
(64 -> 256); stages 2/3/4: 1/3/2 modules of 2 BasicBlocks per branch with the usual HRNet exchange units
(upsampling: 1×1 conv + BN + nearest; downsampling: chains of stride-2 3×3 conv + BN). About 3.9 M
parameters. Parameter names follow the common HRNet ImageNet checkpoint layout (conv1, bn1, conv2, bn2,
layer1, transition1, stage2, ...), so ``load_pretrained`` can take such a file (strides do not change shapes).
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

    def __init__(self, channels, blocks: int):
        super().__init__()
        self.nb = len(channels)
        self.branches = nn.ModuleList([make_layer(BasicBlock, c, c, blocks) for c in channels])
        fuse = []
        for i in range(self.nb):
            row = []
            for j in range(self.nb):
                if j > i:
                    row.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False),
                                             nn.BatchNorm2d(channels[i], momentum=BN_MOMENTUM)))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        cout = channels[i] if last else channels[j]
                        layer = [nn.Conv2d(channels[j], cout, 3, 2, 1, bias=False),
                                 nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
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
                    z = F.interpolate(z, size=y.shape[-2:], mode="nearest")
                y = y + z
            out.append(self.relu(y))
        return out


def _transition(cin_list, cout_list) -> nn.ModuleList:
    layers = []
    for i, cout in enumerate(cout_list):
        if i < len(cin_list):
            if cin_list[i] != cout:
                layers.append(nn.Sequential(nn.Conv2d(cin_list[i], cout, 3, 1, 1, bias=False),
                                            nn.BatchNorm2d(cout, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            layers.append(nn.Sequential(nn.Sequential(nn.Conv2d(cin_list[-1], cout, 3, 2, 1, bias=False),
                                                      nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
                                                      nn.ReLU(inplace=True))))
    return nn.ModuleList(layers)


class HRNet(nn.Module):
    """HRNetV2 backbone returning the four branch outputs (no classification head)."""

    def __init__(self, cfg=W18_SMALL_V2, stem_stride: int = 1):
        super().__init__()
        s1 = cfg["stage1"]
        stem = s1["channels"]
        self.conv1 = nn.Conv2d(3, stem, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(stem, stem, 3, stem_stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(stem, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_layer(Bottleneck, stem, s1["channels"], s1["blocks"])
        prev = [s1["channels"] * Bottleneck.expansion]
        for n in (2, 3, 4):
            s = cfg[f"stage{n}"]
            setattr(self, f"transition{n - 1}", _transition(prev, list(s["channels"])))
            setattr(self, f"stage{n}", nn.Sequential(
                *[HighResolutionModule(s["channels"], s["blocks"]) for _ in range(s["modules"])]))
            prev = list(s["channels"])
        self.out_channels = tuple(prev)

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
    else is skipped. Returns ``{"loaded": [...], "skipped": [...], "missing": [...]}`` (sorted names;
    "skipped" = the file's names that are unknown or of another shape). Never unpickles.
    """
    from bsrdata.models.weights import load_state, read_weights

    state = read_weights(path, what="HRNet")
    rep = load_state(model, state, source=str(path), strict=False, target="HRNet")
    skipped = rep.unexpected + [k for k, _, _ in rep.mismatched]
    return {"loaded": sorted(rep.loaded), "skipped": sorted(skipped), "missing": sorted(rep.missing + [
        k for k, _, _ in rep.mismatched])}


@register_model("hrnet_w18_small_v2")
def hrnet_w18_small_v2(stem_stride: int = 1, pretrained: str | None = None):
    """HRNetV2-W18-Small-v2 (stem stride 1 by default). ``pretrained``: optional weights file path."""
    model = HRNet(W18_SMALL_V2, stem_stride=stem_stride)
    if pretrained:
        model.pretrained_report = load_pretrained(model, pretrained)
    return model
