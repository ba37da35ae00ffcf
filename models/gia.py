"""GIA: group-wise interaction and alignment of two feature maps (CMOS paper §3; docs/cmos.md).

``GIA(in1, in2, channels, groups)`` takes x1 (N, in1, h1, w1) and x2 (N, in2, H, W) and returns either the
pair (y1, y2), both (N, channels, H, W) on x2's grid, or their sum (``output="sum"``). Three parts, each
switchable so the ablation rows of the paper's Table 5 are configurations:

* ``flow``: SFNet-style alignment. x1 and x2 are projected (3×3 conv-BN-LeakyReLU, ``proj_kernel``) to
  ``channels``; two 3×3 convs (2C -> C/2 conv-BN-LeakyReLU, C/2 -> 2) on [resize(x1'), x2'] predict a
  2-channel flow (in x2-grid pixels) and x1' is warped onto x2's grid with ``grid_sample``; also at the
  same scale. The last flow conv starts at zero, so at initialisation the warp equals bilinear resizing.
  Off: plain bilinear resizing of x1' (identity at the same scale).
  (The projection and flow-predictor sizes are our choice; with them CMOS has 15.83 M parameters for 40
  classes, within 1 % of the published 15.98 M.)
* ``channel``: per input 3×3 conv -> global average pool -> 1×1 conv + BN gives an attention a_k (C).
  a_1, a_2 are split into N groups of D = C/N; the N×N matrix of group inner products (÷ D), flattened,
  goes through an MLP N² -> C -> C; re-attention sigmoid(a_k + β_k·MLP_k) (β_k per channel, init 0)
  multiplies the feature, then a 3×3 conv smooths it. Input 2 reads the transposed matrix.
* ``spatial``: the maps are reflect-padded to multiples of the window (15×20, P = 300 positions) and cut
  into windows; a 3×3 conv runs inside each window; the P×P affinity A = f1ᵀf2 / √C between the two
  inputs' windows is read row-wise by input 1 and column-wise by input 2 through a learned P -> 1 map;
  a 1×1 conv C -> 1 gives each input's own map; attention sigmoid(own_k + α_k·adjust_k) (α_k init 0)
  multiplies the window features; windows are put back in place, the padding cropped, and a 3×3 conv
  smooths the seams.
* merge: per input, concat(channel, spatial) -> 3×3 conv + BN. With both branches off the merge sees the
  aligned inputs directly (the "w/o GIA" / "F" rows: a conv over plain or aligned features, no interaction).

Convs are bias-free + BatchNorm2d + LeakyReLU(0.01) unless noted. In training mode the channel branch's
BatchNorm on pooled vectors needs a batch of at least 2.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.blocks import ConvBNAct


def pad_reflect(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad the bottom/right of (N, C, H, W) by mirroring without repeating the edge (like numpy 'reflect').

    Works for pads larger than the map by mirroring repeatedly; a side of length 1 is replicated.
    """
    while pad_h > 0:
        h = x.shape[-2]
        p = min(pad_h, h - 1) if h > 1 else pad_h
        mode = "reflect" if h > 1 else "replicate"
        x = F.pad(x, (0, 0, 0, p), mode=mode)
        pad_h -= p
    while pad_w > 0:
        w = x.shape[-1]
        p = min(pad_w, w - 1) if w > 1 else pad_w
        mode = "reflect" if w > 1 else "replicate"
        x = F.pad(x, (0, p, 0, 0), mode=mode)
        pad_w -= p
    return x


def to_windows(x: torch.Tensor, wh: int, ww: int) -> torch.Tensor:
    """(N, C, H, W) with H % wh == W % ww == 0 -> (N·nh·nw, C, wh, ww), windows in row-major order."""
    n, c, h, w = x.shape
    nh, nw = h // wh, w // ww
    x = x.view(n, c, nh, wh, nw, ww).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n * nh * nw, c, wh, ww)


def from_windows(x: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`to_windows`: (N·nh·nw, C, wh, ww) -> (N, C, h, w)."""
    _, c, wh, ww = x.shape
    nh, nw = h // wh, w // ww
    x = x.view(n, nh, nw, c, wh, ww).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, h, w)


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample x (N, C, h, w) on the grid of ``flow`` (N, 2, H, W), displaced by flow (x, y) in output pixels.

    Uses pixel-centre coordinates (``align_corners=False``) and border padding, so a zero flow gives exactly
    ``F.interpolate(x, (H, W), mode="bilinear", align_corners=False)``.
    """
    n, _, hh, ww = flow.shape
    dt = torch.float64 if flow.dtype == torch.float64 else torch.float32  # never build the grid in float16
    ys = (torch.arange(hh, device=flow.device, dtype=dt) + 0.5) * (2.0 / hh) - 1.0
    xs = (torch.arange(ww, device=flow.device, dtype=dt) + 0.5) * (2.0 / ww) - 1.0
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack((gx, gy), dim=-1).unsqueeze(0)  # (1, H, W, 2)
    scale = torch.tensor([2.0 / ww, 2.0 / hh], device=flow.device, dtype=dt)
    grid = base + flow.permute(0, 2, 3, 1).to(dt) * scale
    out = F.grid_sample(x.to(dt), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


class ChannelInteraction(nn.Module):
    """Channel grouping interaction of two (N, C, H, W) maps -> two (N, C, H, W) maps."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels {channels} not divisible by groups {groups}")
        self.groups = groups
        c = channels
        self.feat = nn.ModuleList([ConvBNAct(c, c, 3, act="lrelu") for _ in range(2)])
        self.att = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)) for _ in range(2)]
        )
        self.mlp = nn.ModuleList(
            [nn.Sequential(nn.Linear(groups * groups, c), nn.LeakyReLU(0.01, inplace=True), nn.Linear(c, c))
             for _ in range(2)]
        )
        self.beta = nn.Parameter(torch.zeros(2, c))
        self.smooth = nn.ModuleList([ConvBNAct(c, c, 3, act="lrelu") for _ in range(2)])

    def forward(self, x1, x2):
        n, c = x1.shape[:2]
        a = [self.att[k](F.adaptive_avg_pool2d(self.feat[k](x), 1)).flatten(1) for k, x in enumerate((x1, x2))]
        d = c // self.groups
        g1 = a[0].view(n, self.groups, d)
        g2 = a[1].view(n, self.groups, d)
        m = torch.bmm(g1, g2.transpose(1, 2)) / d  # (N, G, G): m[i, j] = <g1_i, g2_j> / D
        mats = (m.flatten(1), m.transpose(1, 2).flatten(1))
        out = []
        for k, x in enumerate((x1, x2)):
            r = torch.sigmoid(a[k] + self.beta[k] * self.mlp[k](mats[k]))
            out.append(self.smooth[k](x * r[:, :, None, None]))
        return out


class SpatialInteraction(nn.Module):
    """Spatial grouping interaction over windows of two (N, C, H, W) maps -> two (N, C, H, W) maps."""

    def __init__(self, channels: int, window=(15, 20)):
        super().__init__()
        c = channels
        self.window = tuple(window)
        p = self.window[0] * self.window[1]
        self.feat = nn.ModuleList([ConvBNAct(c, c, 3, act="lrelu") for _ in range(2)])
        self.own = nn.ModuleList([nn.Conv2d(c, 1, 1) for _ in range(2)])
        self.read = nn.ModuleList([nn.Linear(p, 1) for _ in range(2)])  # the 1×1 conv P -> 1
        self.alpha = nn.Parameter(torch.zeros(2))
        self.seam = nn.ModuleList([ConvBNAct(c, c, 3, act="lrelu") for _ in range(2)])

    def forward(self, x1, x2):
        n, c, h, w = x1.shape
        wh, ww = self.window
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        win = [to_windows(pad_reflect(x, hp - h, wp - w), wh, ww) for x in (x1, x2)]
        f = [self.feat[k](win[k]) for k in range(2)]  # (B', C, wh, ww), conv inside each window
        b = f[0].shape[0]
        v1, v2 = f[0].flatten(2), f[1].flatten(2)  # (B', C, P)
        aff = torch.bmm(v1.transpose(1, 2), v2) / math.sqrt(c)  # (B', P, P): rows = x1 positions
        adj = (self.read[0](aff), self.read[1](aff.transpose(1, 2)))  # (B', P, 1) each
        out = []
        for k in range(2):
            att = torch.sigmoid(self.own[k](f[k]) + self.alpha[k] * adj[k].view(b, 1, wh, ww))
            y = from_windows(f[k] * att, n, hp, wp)[:, :, :h, :w]
            out.append(self.seam[k](y))
        return out


class GIA(nn.Module):
    """Align x1 onto x2's grid and let the two interact; see the module docstring.

    Args: ``in1``, ``in2`` input channels; ``channels`` C of the outputs; ``groups`` N (C % N == 0);
    ``window`` (h, w) of the spatial branch; ``flow``/``channel``/``spatial`` switches;
    ``output`` ``"pair"`` -> (y1, y2) or ``"sum"`` -> y1 + y2, each (N, C, H, W) with (H, W) of x2.
    """

    def __init__(self, in1: int, in2: int, channels: int, groups: int, window=(15, 20), flow: bool = True,
                 channel: bool = True, spatial: bool = True, output: str = "pair", proj_kernel: int = 3):
        super().__init__()
        if output not in ("pair", "sum"):
            raise ValueError(f"output must be 'pair' or 'sum', not {output!r}")
        self.use_flow, self.use_channel, self.use_spatial = bool(flow), bool(channel), bool(spatial)
        self.output = output
        c = channels
        self.proj1 = ConvBNAct(in1, c, proj_kernel, act="lrelu")
        self.proj2 = ConvBNAct(in2, c, proj_kernel, act="lrelu")
        if self.use_flow:
            hidden = max(c // 2, 2)
            self.flow_hidden = ConvBNAct(2 * c, hidden, 3, act="lrelu")
            self.flow = nn.Conv2d(hidden, 2, 3, padding=1)
            nn.init.zeros_(self.flow.weight)
            nn.init.zeros_(self.flow.bias)
        if self.use_channel:
            self.channel = ChannelInteraction(c, groups)
        if self.use_spatial:
            self.spatial = SpatialInteraction(c, window)
        nb = int(self.use_channel) + int(self.use_spatial)
        cin = c * max(nb, 1)
        self.merge = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)) for _ in range(2)]
        )

    def align(self, x1, x2):
        """Projected x1 on x2's grid and projected x2: two (N, C, H, W) maps."""
        p1, p2 = self.proj1(x1), self.proj2(x2)
        size = p2.shape[-2:]
        up = p1 if p1.shape[-2:] == size else F.interpolate(p1, size=size, mode="bilinear", align_corners=False)
        if not self.use_flow:
            return up, p2
        flow = self.flow(self.flow_hidden(torch.cat((up, p2), dim=1)))
        return flow_warp(p1, flow), p2

    def forward(self, x1, x2):
        a1, a2 = self.align(x1, x2)
        parts = ([], [])
        if self.use_channel:
            c1, c2 = self.channel(a1, a2)
            parts[0].append(c1)
            parts[1].append(c2)
        if self.use_spatial:
            s1, s2 = self.spatial(a1, a2)
            parts[0].append(s1)
            parts[1].append(s2)
        if not parts[0]:
            parts = ([a1], [a2])
        y1 = self.merge[0](torch.cat(parts[0], dim=1))
        y2 = self.merge[1](torch.cat(parts[1], dim=1))
        return y1 + y2 if self.output == "sum" else (y1, y2)
