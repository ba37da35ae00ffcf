"""GIA: group-wise interaction and alignment of two feature maps (CMOS paper §3.2; docs/cmos.md).

``GIA(in1, channels, groups)`` takes x1 (N, in1, h1, w1) and x2 (N, channels, H, W) and returns the pair
(y1, y2), both (N, channels, H, W) on x2's grid, or their sum (``output="sum"``). It computes what the
authors' released code computes (checked against it on random weights to float rounding, docs/cmos.md):

* **alignment** (``align``): η = 1×1 conv(x1) (in1 -> C), ℓ = 1×1 conv(x2); η is resized bilinearly
  (align_corners=True) to H×W when the sizes differ; a 3×3 conv on [η, ℓ] gives a 2-channel flow (x, y);
  x1 itself (not η) is sampled with ``grid_sample`` (bilinear, zero padding, align_corners=True) at
  ``linspace(-1, 1, n)`` + flow / (W, H); a 3×3 conv maps the warped x1 to C channels: x1'.
  ``flow=False`` (Table 5 ablation) uses a zero flow, i.e. the align_corners=True resize of x1.
* **channel branch**: f_k = CM3(x_k) (conv-BN-LReLU), a_k = CM1(mean_HW f_k) without activation; a_1, a_2
  split into r groups of D = C/r; A[i, j] = <a_2 group i, a_1 group j> (no scaling), flattened; both
  MLPs (r² -> C -> C, ReLU inside and on the output) read it; γ_k = σ(a_k + c_k·MLP_k(A)) with scalar
  c_k (initially 0); out_k = conv-BN(f_k·γ_k).
* **spatial branch**: u_k = CM3(x_k); reflect-padded at the bottom/right to multiples of the 15×20 window
  (mirrored repeatedly when the pad exceeds the map, where the public code refuses: LR below 57×81);
  cut into windows U_k; e_k = CM3(U_k) inside each window is used only for the affinity
  S[p, q] = Σ_c e_1[c, p]·e_2[c, q] (no scaling); r_1 = S·κ_1 + β_1 (reads rows), r_2 = κ_2·S + β_2
  (reads columns); λ_k = σ(1×1 conv(U_k) + s_k·r_k) with scalar s_k (initially 0); U_k·λ_k is put back
  in place (``window_merge``, below), cropped and smoothed by conv-BN.
* **merge**: y_k = conv-BN(cat[channel_k, spatial_k]) (3×3, 2C -> C).

``window_merge``: ``"fixed"`` (default) puts each window back in its place (the public code at HEAD);
``"legacy"`` reproduces the older public code, which reinterpreted the windows' memory as
(N, nH, nW, 15, 20, C) instead of (N·nH·nW, C, 15, 20); the released checkpoints were most likely trained
with it (docs/cmos.md). With ``channel=False`` / ``spatial=False`` the merge reads the remaining branch; with
both off it reads x1' and x2 (the "w/o GIA" rows of Table 5). In training mode the channel branch's
BatchNorm on pooled vectors needs a batch of at least 2.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models.blocks import ConvNormAct

WINDOW_MERGES = ("fixed", "legacy")


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
    x = x.reshape(n, nh, nw, c, wh, ww).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, h, w)


def from_windows_legacy(x: torch.Tensor, n: int, h: int, w: int) -> torch.Tensor:
    """The older public merge: the contiguous (N·nh·nw, C, wh, ww) buffer read as (N, nh, nw, wh, ww, C)
    and laid out as (N, C, nh·wh, nw·ww) (docs/cmos.md, "window merge")."""
    _, c, wh, ww = x.shape
    nh, nw = h // wh, w // ww
    x = x.contiguous().view(n, nh, nw, wh, ww, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, c, h, w)


def base_grid(hh: int, ww: int, like: torch.Tensor) -> torch.Tensor:
    """(1, H, W, 2) sampling grid (x, y) in [-1, 1]: float32 ``linspace`` cast to ``like``'s dtype, as in the
    public code (a float64 grid moves the samples by float32 rounding, ~1e-7 relative on outputs)."""
    gx = torch.linspace(-1.0, 1.0, ww, dtype=torch.float32, device=like.device).to(like.dtype)
    gy = torch.linspace(-1.0, 1.0, hh, dtype=torch.float32, device=like.device).to(like.dtype)
    return torch.stack((gx.view(1, ww).expand(hh, ww), gy.view(hh, 1).expand(hh, ww)), dim=-1).unsqueeze(0)


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample x (N, C, h, w) on the grid of ``flow`` (N, 2, H, W): grid = base_grid + flow / (W, H), bilinear,
    zero padding, align_corners=True. A zero flow gives the align_corners=True bilinear resize of x."""
    n, _, hh, ww = flow.shape
    dt = torch.float32 if flow.dtype in (torch.float16, torch.bfloat16) else flow.dtype
    norm = torch.tensor([ww, hh], dtype=dt, device=flow.device)
    grid = base_grid(hh, ww, flow.to(dt)) + flow.to(dt).permute(0, 2, 3, 1) / norm
    out = F.grid_sample(x.to(dt), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(x.dtype)


class FlowAlign(nn.Module):
    """x1 (N, in1, h1, w1) warped onto x2's (N, C, H, W) grid and mapped to C channels (module docstring)."""

    def __init__(self, in1: int, channels: int, flow: bool = True):
        super().__init__()
        c = channels
        self.use_flow = bool(flow)
        if self.use_flow:
            self.proj1 = nn.Conv2d(in1, c, 1, bias=False)
            self.proj2 = nn.Conv2d(c, c, 1, bias=False)
            self.flow = nn.Conv2d(2 * c, 2, 3, padding=1, bias=False)
        self.out = nn.Conv2d(in1, c, 3, padding=1, bias=False)

    def forward(self, x1, x2):
        size = tuple(x2.shape[-2:])
        if self.use_flow:
            eta = self.proj1(x1)
            if tuple(eta.shape[-2:]) != size:
                eta = F.interpolate(eta, size=size, mode="bilinear", align_corners=True)
            flow = self.flow(torch.cat((eta, self.proj2(x2)), dim=1))
        else:
            flow = x2.new_zeros((x2.shape[0], 2) + size)
        return self.out(flow_warp(x1, flow))


class ChannelInteraction(nn.Module):
    """Channel grouping interaction of x1', x2 (N, C, H, W) -> two (N, C, H, W) maps (module docstring)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels {channels} not divisible by groups {groups}")
        self.groups = groups
        c, r2 = channels, groups * groups
        self.feat1, self.feat2 = ConvNormAct(c, c, 3), ConvNormAct(c, c, 3)
        self.vec1, self.vec2 = ConvNormAct(c, c, 1, act=False), ConvNormAct(c, c, 1, act=False)
        self.mlp1 = nn.Sequential(nn.Linear(r2, c), nn.ReLU(inplace=True), nn.Linear(c, c))
        self.mlp2 = nn.Sequential(nn.Linear(r2, c), nn.ReLU(inplace=True), nn.Linear(c, c))
        self.gate1 = nn.Parameter(torch.zeros(1))
        self.gate2 = nn.Parameter(torch.zeros(1))
        self.smooth1, self.smooth2 = ConvNormAct(c, c, 3, act=False), ConvNormAct(c, c, 3, act=False)

    def forward(self, x1, x2):
        n, c = x2.shape[:2]
        f1, f2 = self.feat1(x1), self.feat2(x2)
        a1 = self.vec1(f1.mean(dim=(2, 3), keepdim=True)).flatten(1)  # (N, C)
        a2 = self.vec2(f2.mean(dim=(2, 3), keepdim=True)).flatten(1)
        d = c // self.groups
        aff = torch.bmm(a2.view(n, self.groups, d), a1.view(n, self.groups, d).transpose(1, 2))  # [i, k]
        v = aff.flatten(1)
        g1 = torch.sigmoid(a1 + self.gate1 * F.relu(self.mlp1(v)))
        g2 = torch.sigmoid(a2 + self.gate2 * F.relu(self.mlp2(v)))
        return self.smooth1(f1 * g1[:, :, None, None]), self.smooth2(f2 * g2[:, :, None, None])


class SpatialInteraction(nn.Module):
    """Spatial grouping interaction over windows of x1', x2 (N, C, H, W) -> two (N, C, H, W) maps."""

    def __init__(self, channels: int, window=(15, 20), window_merge: str = "fixed"):
        super().__init__()
        if window_merge not in WINDOW_MERGES:
            raise ValueError(f"window_merge must be one of {WINDOW_MERGES}, not {window_merge!r}")
        c = channels
        self.window = tuple(int(v) for v in window)
        self.window_merge = window_merge
        p = self.window[0] * self.window[1]
        self.pre1, self.pre2 = ConvNormAct(c, c, 3), ConvNormAct(c, c, 3)
        self.own1, self.own2 = nn.Conv2d(c, 1, 1), nn.Conv2d(c, 1, 1)
        self.win1, self.win2 = ConvNormAct(c, c, 3), ConvNormAct(c, c, 3)
        self.read1, self.read2 = nn.Conv2d(p, 1, 1), nn.Conv2d(p, 1, 1)  # over the P affinity channels
        self.gate1 = nn.Parameter(torch.zeros(1))
        self.gate2 = nn.Parameter(torch.zeros(1))
        self.smooth1, self.smooth2 = ConvNormAct(c, c, 3, act=False), ConvNormAct(c, c, 3, act=False)

    def forward(self, x1, x2):
        n, c, h, w = x2.shape
        wh, ww = self.window
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        u1 = to_windows(pad_reflect(self.pre1(x1), hp - h, wp - w), wh, ww)  # (B', C, wh, ww)
        u2 = to_windows(pad_reflect(self.pre2(x2), hp - h, wp - w), wh, ww)
        b = u1.shape[0]
        e1, e2 = self.win1(u1).flatten(2), self.win2(u2).flatten(2)  # (B', C, P)
        s = torch.bmm(e1.transpose(1, 2), e2)  # (B', P, P): S[p, q]
        r1 = torch.matmul(s, self.read1.weight.view(-1)) + self.read1.bias  # (B', P) over p
        r2 = torch.matmul(self.read2.weight.view(-1), s) + self.read2.bias  # (B', P) over q
        l1 = torch.sigmoid(self.own1(u1) + self.gate1 * r1.view(b, 1, wh, ww))
        l2 = torch.sigmoid(self.own2(u2) + self.gate2 * r2.view(b, 1, wh, ww))
        merge = from_windows if self.window_merge == "fixed" else from_windows_legacy
        o1 = merge(u1 * l1, n, hp, wp)[:, :, :h, :w]
        o2 = merge(u2 * l2, n, hp, wp)[:, :, :h, :w]
        return self.smooth1(o1), self.smooth2(o2)


class GIA(nn.Module):
    """Align x1 onto x2's grid and let the two interact; see the module docstring.

    Args: ``in1`` channels of x1; ``channels`` C of x2 and of the outputs; ``groups`` r (C % r == 0);
    ``window`` (h, w) of the spatial branch; ``flow``/``channel``/``spatial`` switches (Table 5);
    ``output`` ``"pair"`` -> (y1, y2) or ``"sum"`` -> y1 + y2; ``window_merge`` ``"fixed"`` | ``"legacy"``.
    """

    def __init__(self, in1: int, channels: int, groups: int, window=(15, 20), flow: bool = True,
                 channel: bool = True, spatial: bool = True, output: str = "pair", window_merge: str = "fixed"):
        super().__init__()
        if output not in ("pair", "sum"):
            raise ValueError(f"output must be 'pair' or 'sum', not {output!r}")
        if window_merge not in WINDOW_MERGES:
            raise ValueError(f"window_merge must be one of {WINDOW_MERGES}, not {window_merge!r}")
        self.use_channel, self.use_spatial = bool(channel), bool(spatial)
        self.output = output
        c = channels
        self.align = FlowAlign(in1, c, flow=flow)
        if self.use_channel:
            self.channel = ChannelInteraction(c, groups)
        if self.use_spatial:
            self.spatial = SpatialInteraction(c, window, window_merge)
        cin = c * max(int(self.use_channel) + int(self.use_spatial), 1)
        self.merge1, self.merge2 = ConvNormAct(cin, c, 3, act=False), ConvNormAct(cin, c, 3, act=False)

    def forward(self, x1, x2):
        a1 = self.align(x1, x2)
        parts = ([], [])
        if self.use_channel:
            c1, c2 = self.channel(a1, x2)
            parts[0].append(c1)
            parts[1].append(c2)
        if self.use_spatial:
            s1, s2 = self.spatial(a1, x2)
            parts[0].append(s1)
            parts[1].append(s2)
        if not parts[0]:
            parts = ([a1], [x2])
        y1 = self.merge1(torch.cat(parts[0], dim=1))
        y2 = self.merge2(torch.cat(parts[1], dim=1))
        return y1 + y2 if self.output == "sum" else (y1, y2)
