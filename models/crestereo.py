"""CREStereo (Li et al., CVPR 2022): cascaded recurrent stereo matching with adaptive correlation.

Written from the paper and the description of the official Apache-2.0 MegEngine release. Parameter
names and shapes equal those of the public ``crestereo_eth3d.pth`` checkpoint (94 tensors,
5,432,948 parameters, no buffers), so that file loads with ``strict=True``.

Pieces (all at feature resolution, features from one shared encoder):

- ``fnet``: RAFT-style residual encoder, instance norm, output 256 channels at 1/4 of the input.
  Its output of the left image also gives the GRU state (first 128 channels, tanh) and the context
  (last 128 channels, ReLU).
- Adaptive group correlation (:class:`GroupCorrelation`): the 256 channels are split into 4 groups of
  64; each group correlates the left feature with the right feature at 9 positions around the
  current match ``x + flow``: a 1×9 horizontal window (even iterations) or a 3×3 window (odd
  iterations). At 1/16 and 1/8 the 9 positions are moved by learned offsets in (-1, 1)
  (``conv_offset_16``/``conv_offset_8``); at 1/16 the features first pass through linear
  self-attention (``self_att_fn``, with a sine positional encoding) and cross-attention
  (``cross_att_fn``). Output 4 × 9 = 36 channels.
- ``update_block``: motion encoder (correlation + flow), separable ConvGRU (1×5 then 5×1), flow
  head (delta flow, 2 channels) and the convex-upsampling mask (9 weights per 4×4 sub-pixel).
- Cascade: with no initial flow, ``iters // 2`` updates at 1/16, ``iters // 2`` at 1/8 and ``iters``
  at 1/4; with an initial flow only ``iters`` at 1/4. :func:`crestereo_disparity` runs the two-pass
  inference (half resolution, then full resolution initialised from it).

Sign convention: inside the network the flow is where the match lies in the right image relative to
the left pixel (x_right = x_left + flow_x, so flow_x = −disparity); the model returns the negated
flow, so output channel 0 is the positive disparity in input pixels. One quirk of the official
network is kept on purpose because the released weights were trained with it: when the flow moves
from 1/16 to 1/8 and from 1/8 to 1/4 it is resized with a factor of −1/2 (the sign flips twice).

Inputs of :class:`CREStereo` are BGR images with values 0–255, float (N, 3, H, W), H and W
multiples of 32 for the two-pass inference (:func:`crestereo_disparity` pads for you).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from bsrdata.models import weights as _weights
from bsrdata.models.registry import register_model

__all__ = [
    "CREStereo",
    "GroupCorrelation",
    "linear_attention",
    "sine_position_encoding",
    "convex_upsample",
    "crestereo_disparity",
    "predict_disparity",
    "load_crestereo",
    "extract_state_dict",
]

SEARCH_NUM = 9  # positions per correlation window (1×9 or 3×3)
GROUPS = 4  # correlation groups (256 channels -> 4 × 64)


# ----------------------------------------------------------------------------------------------
# Feature encoder


class _ResBlock(nn.Module):
    """Two 3×3 convs with instance norm and a 1×1 projection shortcut (always present)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm1 = nn.InstanceNorm2d(cout)
        self.norm2 = nn.InstanceNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride), nn.InstanceNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu(self.downsample(x) + y)


class _Encoder(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> (N, 256, H/4, W/4). Instance norm has no parameters."""

    def __init__(self, out_dim: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.norm1 = nn.InstanceNorm2d(64)
        self.layer1 = nn.Sequential(_ResBlock(64, 64, 1), _ResBlock(64, 64, 1))
        self.layer2 = nn.Sequential(_ResBlock(64, 96, 2), _ResBlock(96, 96, 1))
        self.layer3 = nn.Sequential(_ResBlock(96, 128, 1), _ResBlock(128, 128, 1))
        self.conv2 = nn.Conv2d(128, out_dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.norm1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.conv2(x)


# ----------------------------------------------------------------------------------------------
# Linear attention (LoFTR-style) and positional encoding


def linear_attention(q, k, v, eps: float = 1e-6):
    """Multi-head linear attention with the feature map elu(x) + 1.

    q: (N, L, H, D), k and v: (N, S, H, D) -> (N, L, H, D):
    out_l = φ(q_l)·Σ_s φ(k_s) v_sᵀ / (φ(q_l)·Σ_s φ(k_s) + eps).
    (Values are divided by S before the sums and the result multiplied by S afterwards, as the
    reference does against fp16 overflow; in exact arithmetic this changes nothing.)
    """
    qf = F.elu(q) + 1.0
    kf = F.elu(k) + 1.0
    s = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", kf, v / s)
    z = 1.0 / (torch.einsum("nlhd,nhd->nlh", qf, kf.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", qf, kv, z) * s


class _AttentionLayer(nn.Module):
    """One LoFTR encoder layer: x + norm2(mlp([x, norm1(merge(attn(q(x), k(src), v(src))))]))."""

    def __init__(self, d_model: int = 256, nhead: int = 8):
        super().__init__()
        self.nhead = nhead
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * d_model, 2 * d_model, bias=False),
            nn.ReLU(),
            nn.Linear(2 * d_model, d_model, bias=False),
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x, source):
        n, _, c = x.shape
        heads = lambda t: t.reshape(n, -1, self.nhead, c // self.nhead)  # noqa: E731
        msg = linear_attention(heads(self.q_proj(x)), heads(self.k_proj(source)), heads(self.v_proj(source)))
        msg = self.norm1(self.merge(msg.reshape(n, -1, c)))
        msg = self.norm2(self.mlp(torch.cat([x, msg], dim=2)))
        return x + msg


class _FeatureTransformer(nn.Module):
    """A stack of attention layers, each ``"self"`` or ``"cross"``; features are (N, L, C).

    Cross: the left features attend to the right ones, then the right ones attend to the *updated*
    left features (the reference order).
    """

    def __init__(self, kinds: tuple[str, ...], d_model: int = 256, nhead: int = 8):
        super().__init__()
        self.kinds = kinds
        self.layers = nn.ModuleList(_AttentionLayer(d_model, nhead) for _ in kinds)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, f0, f1):
        for layer, kind in zip(self.layers, self.kinds):
            if kind == "self":
                f0, f1 = layer(f0, f0), layer(f1, f1)
            else:
                f0 = layer(f0, f1)
                f1 = layer(f1, f0)
        return f0, f1


def sine_position_encoding(channels: int, height: int, width: int, variant: str = "megengine",
                           device=None, dtype=torch.float32):
    """2-D sine encoding (1, C, H, W); positions start at 1.

    Channels 4i, 4i+1, 4i+2, 4i+3 are sin(x·w_i), cos(x·w_i), sin(y·w_i), cos(y·w_i) with
    i = 0 .. C/4 − 1. ``variant="megengine"`` (the official release the weights were trained with)
    has w_i = exp(−2i), because there ``-log(1e4) / C // 2`` floors to −1; ``"loftr"`` has
    w_i = exp(−2i·log(1e4)/(C/2)) (the formula the PyTorch port uses).
    """
    i2 = torch.arange(0, channels // 2, 2, dtype=torch.float64)
    if variant == "megengine":
        w = torch.exp(-i2)
    elif variant == "loftr":
        w = torch.exp(i2 * (-math.log(10000.0) / (channels // 2)))
    else:
        raise ValueError(f"unknown position encoding variant {variant!r}")
    y = torch.arange(1, height + 1, dtype=torch.float64)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float64)[None, :].expand(height, width)
    pe = torch.empty(channels, height, width, dtype=torch.float64)
    pe[0::4] = torch.sin(x[None] * w[:, None, None])
    pe[1::4] = torch.cos(x[None] * w[:, None, None])
    pe[2::4] = torch.sin(y[None] * w[:, None, None])
    pe[3::4] = torch.cos(y[None] * w[:, None, None])
    return pe[None].to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Adaptive group correlation


def window_offsets(small_patch: bool) -> list[tuple[int, int]]:
    """The 9 (dx, dy) positions of a window, row-major: 3×3 if ``small_patch`` else 1×9."""
    ry, rx = (1, 1) if small_patch else (0, 4)
    return [(dx, dy) for dy in range(-ry, ry + 1) for dx in range(-rx, rx + 1)]


def sample_pixels(img, x, y):
    """Bilinear sampling at pixel coordinates, zero outside (OpenCV remap, BORDER_CONSTANT 0).

    img (N, C, H, W); x, y (N, h, w) pixel coordinates -> (N, C, h, w).
    """
    _, _, h, w = img.shape
    gx = 2.0 * x / max(w - 1, 1) - 1.0
    gy = 2.0 * y / max(h - 1, 1) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class GroupCorrelation:
    """Correlation of left features with right features around ``x + flow`` (36 channels out).

    fmap1, fmap2: (N, C, H, W) with C divisible by 4. ``attention``, if given, is applied once to
    the pair (cross-attention at 1/16) before correlating; the result is the same at every
    iteration, so it is computed once and kept.

    Channel ``g*9 + k`` of the output is, for group g (channels g·C/4 .. (g+1)·C/4 − 1) and window
    position k = (dx, dy) of :func:`window_offsets`, the channel mean of
    left(p) · right(p + flow(p) + (dx, dy) [+ learned offset_k(p)]).

    - ``adaptive(flow, offset, small_patch)``: right features are sampled bilinearly (zero outside)
      at all 9 shifted positions; offset (N, 18, H, W), channel 2k = x, 2k+1 = y of position k.
    - ``warped(flow, small_patch)``: right features are warped once to ``p + flow`` (zero
      outside), then the 9 integer shifts read the warped map with edge replication.
    """

    def __init__(self, fmap1, fmap2, attention=None):
        if attention is not None:
            n, c, h, w = fmap1.shape
            f1 = fmap1.permute(0, 2, 3, 1).reshape(n, h * w, c)
            f2 = fmap2.permute(0, 2, 3, 1).reshape(n, h * w, c)
            f1, f2 = attention(f1, f2)
            fmap1 = f1.reshape(n, h, w, c).permute(0, 3, 1, 2)
            fmap2 = f2.reshape(n, h, w, c).permute(0, 3, 1, 2)
        self.fmap1 = fmap1
        self.fmap2 = fmap2
        n, _, h, w = fmap1.shape
        ys, xs = torch.meshgrid(
            torch.arange(h, dtype=fmap1.dtype, device=fmap1.device),
            torch.arange(w, dtype=fmap1.dtype, device=fmap1.device),
            indexing="ij",
        )
        self.xs, self.ys = xs, ys

    def _grouped_mean(self, right_stack):
        """right_stack (N, C, 9, H, W) -> (N, 36, H, W): per group, mean over its channels."""
        n, c, k, h, w = right_stack.shape
        prod = self.fmap1.unsqueeze(2) * right_stack
        return prod.reshape(n, GROUPS, c // GROUPS, k, h, w).mean(dim=2).reshape(n, GROUPS * k, h, w)

    def adaptive(self, flow, offset, small_patch: bool):
        n, c, h, w = self.fmap1.shape
        base = torch.tensor(window_offsets(small_patch), dtype=flow.dtype, device=flow.device)  # (9, 2)
        off = offset.reshape(n, SEARCH_NUM, 2, h, w) + base[None, :, :, None, None]
        x = self.xs + flow[:, 0:1] + off[:, :, 0]  # (N, 9, H, W)
        y = self.ys + flow[:, 1:2] + off[:, :, 1]
        right = sample_pixels(self.fmap2, x.reshape(n, SEARCH_NUM * h, w), y.reshape(n, SEARCH_NUM * h, w))
        return self._grouped_mean(right.reshape(n, c, SEARCH_NUM, h, w))

    def warped(self, flow, small_patch: bool):
        n, c, h, w = self.fmap1.shape
        right = sample_pixels(self.fmap2, self.xs + flow[:, 0], self.ys + flow[:, 1])
        ry, rx = (1, 1) if small_patch else (0, 4)
        padded = F.pad(right, (rx, rx, ry, ry), mode="replicate")
        left = self.fmap1.reshape(n, GROUPS, c // GROUPS, h, w)
        corr = []
        for dx, dy in window_offsets(small_patch):  # one shift at a time: no 9x copy of the features
            shifted = padded[:, :, ry + dy:ry + dy + h, rx + dx:rx + dx + w].reshape(n, GROUPS, c // GROUPS, h, w)
            corr.append((left * shifted).mean(dim=2))
        return torch.stack(corr, dim=2).reshape(n, GROUPS * SEARCH_NUM, h, w)


# ----------------------------------------------------------------------------------------------
# Recurrent update


class _MotionEncoder(nn.Module):
    def __init__(self, corr_channels: int = GROUPS * SEARCH_NUM):
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(192 + 64, 128 - 2, 3, padding=1)

    def forward(self, flow, corr):
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([c, f], dim=1))), flow], dim=1)


class _SepConvGRU(nn.Module):
    """ConvGRU applied twice: with 1×5 kernels, then with 5×1 kernels."""

    def __init__(self, hidden: int = 128, inp: int = 256):
        super().__init__()
        for name, k, p in (("1", (1, 5), (0, 2)), ("2", (5, 1), (2, 0))):
            for gate in "zrq":
                setattr(self, f"conv{gate}{name}", nn.Conv2d(hidden + inp, hidden, k, padding=p))

    def _step(self, h, x, cz, cr, cq):
        hx = torch.cat([h, x], dim=1)
        z = torch.sigmoid(cz(hx))
        r = torch.sigmoid(cr(hx))
        q = torch.tanh(cq(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q

    def forward(self, h, x):
        h = self._step(h, x, self.convz1, self.convr1, self.convq1)
        return self._step(h, x, self.convz2, self.convr2, self.convq2)


class _FlowHead(nn.Module):
    def __init__(self, cin: int = 128, hidden: int = 256):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, 2, 3, padding=1)

    def forward(self, x):
        return self.conv2(F.relu(self.conv1(x)))


class _UpdateBlock(nn.Module):
    """(state, context, corr, flow) -> (new state, upsampling mask logits (N, 9·r², H, W), Δflow)."""

    def __init__(self, hidden: int = 128, rate: int = 4):
        super().__init__()
        self.encoder = _MotionEncoder()
        self.gru = _SepConvGRU(hidden, 128 + hidden)
        self.flow_head = _FlowHead(hidden, 256)
        self.mask = nn.Sequential(
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, rate * rate * 9, 1)
        )

    def forward(self, net, inp, corr, flow):
        x = torch.cat([inp, self.encoder(flow, corr)], dim=1)
        net = self.gru(net, x)
        return net, 0.25 * self.mask(net), self.flow_head(net)


def convex_upsample(flow, mask, rate: int = 4):
    """Convex upsampling: (N, 2, H, W) flow, (N, 9·rate², H, W) logits -> (N, 2, rate·H, rate·W).

    Each output sub-pixel (i, j) of cell (y, x) is a softmax-weighted sum (over the 9 logits
    ``mask[:, k·rate² + i·rate + j]``) of ``rate · flow`` at the 3×3 neighbours of (y, x),
    neighbour k row-major, zero outside the image.
    """
    n, _, h, w = flow.shape
    weights = torch.softmax(mask.reshape(n, 1, 9, rate, rate, h, w), dim=2)
    nb = F.unfold(rate * flow, 3, padding=1).reshape(n, 2, 9, 1, 1, h, w)
    up = (weights * nb).sum(dim=2)  # (N, 2, rate, rate, H, W)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, 2, rate * h, rate * w)


def _resize_flow(flow, size, factor):
    return factor * F.interpolate(flow, size=size, mode="bilinear", align_corners=True)


# ----------------------------------------------------------------------------------------------
# The network


class CREStereo(nn.Module):
    """CREStereo. ``forward(left, right, iters, flow_init=None) -> (N, 2, H, W)``.

    left, right: float (N, 3, H, W), BGR, 0–255, H and W multiples of 16 (32 when this output is
    later used as ``flow_init`` at twice the size). flow_init: a previous output (N, 2, h, w) at
    another resolution (usually H/2 × W/2), in that resolution's pixels. Returns the last
    prediction at full input resolution: channel 0 = disparity (positive, input pixels),
    channel 1 = the vertical component (near 0 for rectified pairs). ``return_all=True`` returns
    the list of every iteration's prediction instead.
    """

    def __init__(self, hidden_dim: int = 128, position_encoding: str = "megengine"):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.position_encoding = position_encoding
        self.fnet = _Encoder(256)
        self.update_block = _UpdateBlock(hidden_dim, rate=4)
        self.self_att_fn = _FeatureTransformer(("self",))
        self.cross_att_fn = _FeatureTransformer(("cross",))
        self.conv_offset_16 = nn.Conv2d(256, SEARCH_NUM * 2, 3, padding=1)
        self.conv_offset_8 = nn.Conv2d(256, SEARCH_NUM * 2, 3, padding=1)

    def _offsets(self, conv, fmap):
        return (torch.sigmoid(conv(fmap)) - 0.5) * 2.0  # in (-1, 1), range 1

    def _refine_level(self, net, inp, corr_fn, off, flow, iters, full_size, scale, preds):
        """``iters`` cascade updates at one pyramid level (adaptive correlation with the learnt offsets,
        alternating patch shapes); returns the last flow convex-upsampled ×4 (None if iters is 0) and
        appends each, resized to ``full_size`` with the factor ``scale``, to ``preds`` if given."""
        up = None
        for it in range(iters):
            flow = flow.detach()
            corr = corr_fn.adaptive(flow, off, small_patch=bool(it % 2))
            net, mask, delta = self.update_block(net, inp, corr, flow)
            flow = flow + delta
            up = convex_upsample(flow, mask, 4)
            if preds is not None:
                preds.append(_resize_flow(up, full_size, scale))
        return up

    def forward(self, left, right, iters: int = 20, flow_init=None, return_all: bool = False):
        if left.shape != right.shape or left.dim() != 4 or left.shape[1] != 3:
            raise ValueError(f"left {tuple(left.shape)} and right {tuple(right.shape)} must be equal (N, 3, H, W)")
        n, _, H, W = left.shape
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if H % 16 or W % 16:
            raise ValueError(f"input sides must be multiples of 16, got {H}x{W}")
        x = torch.cat([left, right], dim=0) * (2.0 / 255.0) - 1.0
        fmap1, fmap2 = self.fnet(x).float().split(n, dim=0)
        hdim = self.hidden_dim
        net = torch.tanh(fmap1[:, :hdim])
        inp = torch.relu(fmap1[:, hdim:])
        q_size = fmap1.shape[2:]
        preds = []

        if flow_init is not None:
            flow = _resize_flow(flow_init, q_size, -fmap1.shape[2] / flow_init.shape[2])
        else:
            # 1/8 and 1/16 pyramids of features, state and context
            f1_8, f2_8 = F.avg_pool2d(fmap1, 2, 2), F.avg_pool2d(fmap2, 2, 2)
            f1_16, f2_16 = F.avg_pool2d(fmap1, 4, 4), F.avg_pool2d(fmap2, 4, 4)
            off_8 = self._offsets(self.conv_offset_8, f1_8)
            off_16 = self._offsets(self.conv_offset_16, f1_16)
            net_8, inp_8 = F.avg_pool2d(net, 2, 2), F.avg_pool2d(inp, 2, 2)
            net_16, inp_16 = F.avg_pool2d(net, 4, 4), F.avg_pool2d(inp, 4, 4)

            # positional encoding + self-attention at 1/16 (sized from the input, H/16 × W/16)
            h16, w16 = f1_16.shape[2:]
            pe = sine_position_encoding(256, H // 16, W // 16, self.position_encoding, f1_16.device, f1_16.dtype)
            pe = pe[:, :, :h16, :w16]
            t1 = (f1_16 + pe).flatten(2).transpose(1, 2)
            t2 = (f2_16 + pe).flatten(2).transpose(1, 2)
            t1, t2 = self.self_att_fn(t1, t2)
            f1_16 = t1.transpose(1, 2).reshape(n, 256, h16, w16)
            f2_16 = t2.transpose(1, 2).reshape(n, 256, h16, w16)
            corr_16 = GroupCorrelation(f1_16, f2_16, attention=self.cross_att_fn)
            corr_8 = GroupCorrelation(f1_8, f2_8)

            flow16 = fmap1.new_zeros(n, 2, h16, w16)
            flow = self._refine_level(net_16, inp_16, corr_16, off_16, flow16, iters // 2, (H, W), -4.0,
                                      preds if return_all else None)  # at 1/4
            flow8 = _resize_flow(flow, f1_8.shape[2:], -f1_8.shape[2] / flow.shape[2]) if flow is not None \
                else fmap1.new_zeros(n, 2, *f1_8.shape[2:])
            flow = self._refine_level(net_8, inp_8, corr_8, off_8, flow8, iters // 2, (H, W), -2.0,
                                      preds if return_all else None)  # at 1/2

            flow = _resize_flow(flow, q_size, -q_size[0] / flow.shape[2]) if flow is not None \
                else fmap1.new_zeros(n, 2, *q_size)

        corr_4 = GroupCorrelation(fmap1, fmap2)
        out = None
        for it in range(iters):
            flow = flow.detach()
            corr = corr_4.warped(flow, small_patch=bool(it % 2))
            net, mask, delta = self.update_block(net, inp, corr, flow)
            flow = flow + delta
            out = -convex_upsample(flow, mask, 4)
            preds.append(out)
        return preds if return_all else out


@register_model("crestereo")
def crestereo(**kw) -> CREStereo:
    """CREStereo with random weights (load the public ones with :func:`load_crestereo`)."""
    return CREStereo(**kw)


# ----------------------------------------------------------------------------------------------
# Inference


@torch.no_grad()
def crestereo_disparity(model: CREStereo, left_bgr, right_bgr, iters: int = 20, multiple: int = 32):
    """Two-pass CREStereo inference.

    left_bgr, right_bgr: float tensors (N, 3, H, W), BGR, 0–255 (any H, W ≥ 1). The pair is padded
    at the bottom and right by edge replication to multiples of ``multiple`` (32), run at half
    resolution (bilinear, align_corners) with no initial flow, then at full resolution initialised
    from that, ``iters`` updates each; the padding is cropped. Returns float32 (N, H, W): positive
    disparity in input pixels.
    """
    if left_bgr.shape != right_bgr.shape:
        raise ValueError(f"pair of unequal sizes: {tuple(left_bgr.shape)} vs {tuple(right_bgr.shape)}")
    _, _, h, w = left_bgr.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    pair = torch.cat([left_bgr, right_bgr], dim=0).float()
    if ph or pw:
        pair = F.pad(pair, (0, pw, 0, ph), mode="replicate")
    left, right = pair.chunk(2, dim=0)
    H, W = left.shape[2:]
    half = F.interpolate(pair, size=(H // 2, W // 2), mode="bilinear", align_corners=True)
    l2, r2 = half.chunk(2, dim=0)
    flow_half = model(l2, r2, iters=iters, flow_init=None)
    flow = model(left, right, iters=iters, flow_init=flow_half)
    return flow[:, 0, :h, :w].float()


# ----------------------------------------------------------------------------------------------
# Weights


def extract_state_dict(obj, path: str = "weights") -> dict:
    """A flat name -> tensor dict from a loaded checkpoint object.

    Accepts a bare state dict or one nested under ``state_dict``, ``model``, ``model_state_dict``,
    ``net`` or ``params``; strips a leading ``module.`` (DataParallel) from every key.
    (:func:`bsrdata.models.weights.extract_state_dict` with "CREStereo" in its messages.)
    """
    return _weights.extract_state_dict(obj, path, what="CREStereo")


def load_crestereo(path, device="cpu", **kw) -> CREStereo:
    """Build CREStereo and load ``crestereo_eth3d.pth`` (or any file with the same tensors) strictly.

    Reads with ``torch.load(weights_only=True)`` (no arbitrary unpickling; ``.safetensors`` also works).
    Returns the model in eval mode on ``device``. Raises BsrError (one line) for a missing, unreadable or
    mismatched file, listing missing and unexpected keys and shape mismatches (truncated, with counts).
    """
    path = os.fspath(path)
    sd = _weights.read_weights(path, what="CREStereo", expected="crestereo_eth3d.pth")
    model = CREStereo(**kw)
    _weights.load_state(model, sd, source=path, strict=True, target="CREStereo")
    return model.to(device).eval()


def predict_disparity(model, left_bgr, right_bgr, size=None, iters: int = 20, device="cpu"):
    """Disparity of one rectified pair at its own resolution, the way the official demo runs it.

    left_bgr, right_bgr: uint8 (H, W, 3) BGR of equal size. size: optional (h, w) to run at: both
    images are resized there (bilinear), and the disparity is resized back to H×W (bilinear) and
    multiplied by W / w. model: a :class:`CREStereo` (or any callable with its forward signature).
    Returns float32 (H, W), disparity in pixels of the input (positive = the point lies further left
    in the right image).
    """
    import cv2
    import numpy as np

    if left_bgr.shape != right_bgr.shape:
        raise ValueError(f"pair of unequal sizes: {left_bgr.shape} vs {right_bgr.shape}")
    h, w = left_bgr.shape[:2]
    if size is not None and tuple(size) != (h, w):
        eh, ew = int(size[0]), int(size[1])
        left_bgr = cv2.resize(left_bgr, (ew, eh), interpolation=cv2.INTER_LINEAR)
        right_bgr = cv2.resize(right_bgr, (ew, eh), interpolation=cv2.INTER_LINEAR)
    else:
        eh, ew = h, w

    def tensor(img):
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float()[None].to(device)

    disp = crestereo_disparity(model, tensor(left_bgr), tensor(right_bgr), iters=iters)[0].cpu().numpy()
    if (eh, ew) != (h, w):
        disp = cv2.resize(disp, (w, h), interpolation=cv2.INTER_LINEAR) * (w / ew)
    return disp.astype(np.float32)
