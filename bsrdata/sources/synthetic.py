"""Procedural RGB-D indoor scenes with semantic labels: the embedded default source (no download).

Each frame is ray-cast from a pinhole camera (focal length ≈ 0.8·W px, small random yaw and pitch) into a
closed room: floor, ceiling, side walls and a back wall, with 3–7 objects (boxes and cylinders standing on
the floor, spheres, fronto-parallel panels) at several depths so they occlude each other and the room.
Every surface has its own procedural texture (checks, stripes, grain, sinusoid mixtures with fine detail),
band-limited by the pixel footprint so distant and grazing surfaces fade to their mean instead of
aliasing, and Lambert shading. Depth is the camera z-distance in metres (≈ 0.6–10 m, like NYUv2), and the label of a
pixel is the class of the surface that was hit, so depth edges and label edges coincide by construction.

Classes (``num_classes`` = 8): 0 floor, 1 ceiling, 2 side wall, 3 back wall, 4 box, 5 sphere, 6 panel,
7 cylinder. With fewer classes the id is taken modulo ``num_classes``. 255 = nothing hit (never in
practice: the room is closed).

A frame depends only on ``(seed, key)`` and ``size``: it is regenerated identically in any process.
"""

from __future__ import annotations

import hashlib

import numpy as np

from bsrdata.errors import BsrError
from bsrdata.sources.base import CombinedSource, Record, Source

CLASS_NAMES = ("floor", "ceiling", "wall", "back wall", "box", "sphere", "panel", "cylinder")


def _rng(seed, key):
    h = hashlib.sha256(f"bsrdata-synthetic\x1f{int(seed)}\x1f{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(
        [int.from_bytes(h[i:i + 4], "little") for i in range(0, 32, 4)])))


def _fade(period, footprint):
    """Contrast kept for a pattern of ``period`` seen through a pixel ``footprint`` (same units): 1 when a
    period spans ≥ 4 pixels, 0 when it spans ≤ 2 (finer patterns would alias), linear in between."""
    return np.clip((period / footprint - 2.0) / 2.0, 0.0, 1.0)


def _texture(rng, u, v, footprint):
    """A random procedural pattern in [0, 1] of surface coordinates u, v (metres), band-limited: every
    component fades to its mean where its period covers fewer than ~4 pixels (``footprint``: metres per
    pixel at each point), so distant or grazing surfaces do not alias."""
    kind = rng.integers(0, 4)
    if kind == 0:  # checks with fine stripes
        p = float(rng.uniform(0.15, 0.6))
        base = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float64)
        pf = float(rng.uniform(0.02, 0.06))
        fine = np.sin(2 * np.pi * u / pf)
        t = 0.5 + 0.75 * _fade(2 * p, footprint) * (base - 0.5) + 0.125 * _fade(pf, footprint) * fine
    elif kind == 1:  # oriented stripes
        a = float(rng.uniform(0, np.pi))
        p = float(rng.uniform(0.04, 0.25))
        w = u * np.cos(a) + v * np.sin(a)
        sq = np.sign(np.sin(2 * np.pi * w / p)) * np.minimum(1.0, np.abs(np.sin(2 * np.pi * w / p)) * 3)
        t = 0.5 + 0.5 * _fade(p, footprint) * sq
    elif kind == 2:  # wood-like grain
        p = float(rng.uniform(0.03, 0.1))
        t = 0.5 + 0.5 * _fade(p, footprint) * np.sin(
            2 * np.pi * (u + 0.08 * np.sin(2 * np.pi * v / float(rng.uniform(0.3, 1.0)))) / p)
    else:  # sinusoid mixture (several scales, random orientations)
        t = np.zeros_like(u)
        for _ in range(4):
            a = float(rng.uniform(0, np.pi))
            p = float(rng.uniform(0.03, 0.8))
            ph = float(rng.uniform(0, 2 * np.pi))
            t = t + _fade(p, footprint) * np.sin(2 * np.pi * (u * np.cos(a) + v * np.sin(a)) / p + ph)
        t = 0.5 + 0.5 * t / 4.0
    return np.clip(t, 0.0, 1.0)


def _colour(rng):
    c = rng.uniform(0.15, 0.95, size=3)
    return c


def render_scene(rng: np.random.Generator, height: int, width: int):
    """Ray-cast one random room. Returns (rgb uint8 (H,W,3), depth float32 m (H,W), class uint8 (H,W))."""
    H, W = int(height), int(width)
    f = 0.8 * W * float(rng.uniform(0.9, 1.1))
    yaw = float(rng.uniform(-0.25, 0.25))
    pitch = float(rng.uniform(-0.12, 0.12))
    cy_, sy_ = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rot = r_yaw @ r_pitch
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    dc = np.stack([(uu + 0.5 - W / 2) / f, (vv + 0.5 - H / 2) / f, np.ones_like(uu)], axis=-1)
    d = dc @ rot.T  # world ray per pixel; t along d equals camera z-depth
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]

    room_w = float(rng.uniform(1.5, 3.0))
    cam_h = float(rng.uniform(1.0, 1.6))
    room_h = float(rng.uniform(2.4, 3.2))
    back = float(rng.uniform(4.5, 9.5))

    best = np.full((H, W), np.inf)
    sid = np.full((H, W), -1, dtype=np.int32)
    surfaces = []  # (class id, normal fn, uv fn, rng for texture, colour); fns take world points (K, 3)

    def consider(t, cls, normal, uvfn):
        t = np.where(t > 1e-6, t, np.inf)  # NaN compares False -> inf
        m = t < best
        surfaces.append((cls, normal, uvfn, np.random.Generator(np.random.PCG64(rng.integers(0, 2**63))),
                         _colour(rng)))
        best[m] = t[m]
        sid[m] = len(surfaces) - 1

    def const(n):
        n = np.asarray(n, float)
        return lambda p: np.broadcast_to(n, p.shape)

    with np.errstate(divide="ignore", invalid="ignore"):
        consider(np.where(dy > 0, cam_h / dy, np.inf), 0, const((0, -1, 0)), lambda p: (p[:, 0], p[:, 2]))
        consider(np.where(dy < 0, -(room_h - cam_h) / dy, np.inf), 1, const((0, 1, 0)), lambda p: (p[:, 0], p[:, 2]))
        consider(np.where(dx < 0, -room_w / dx, np.inf), 2, const((1, 0, 0)), lambda p: (p[:, 2], p[:, 1]))
        consider(np.where(dx > 0, room_w / dx, np.inf), 2, const((-1, 0, 0)), lambda p: (p[:, 2], p[:, 1]))
        consider(np.where(dz > 0, back / dz, np.inf), 3, const((0, 0, -1)), lambda p: (p[:, 0], p[:, 1]))

        n_obj = int(rng.integers(3, 8))
        for _ in range(n_obj):
            kind = int(rng.integers(0, 4))
            z = float(rng.uniform(1.0, back - 0.6))
            x = float(rng.uniform(-room_w + 0.4, room_w - 0.4)) * 0.8
            if kind == 0:  # box on the floor (slab intersection)
                sx, sy, sz = rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.5), rng.uniform(0.3, 1.0)
                lo = np.array([x - sx / 2, cam_h - sy, z - sz / 2])
                hi = np.array([x + sx / 2, cam_h, z + sz / 2])
                tmin = np.full((H, W), -np.inf)
                tmax = np.full((H, W), np.inf)
                for a in range(3):
                    t1, t2 = lo[a] / d[..., a], hi[a] / d[..., a]
                    tmin = np.maximum(tmin, np.minimum(t1, t2))
                    tmax = np.minimum(tmax, np.maximum(t1, t2))
                hit = (tmax >= tmin) & (tmin > 0)

                def face(p, lo=lo, hi=hi):
                    dist = np.minimum(np.abs(p - lo), np.abs(p - hi))
                    ax = dist.argmin(axis=1)
                    near_lo = np.abs(p - lo)[np.arange(len(p)), ax] < np.abs(p - hi)[np.arange(len(p)), ax]
                    return ax, near_lo

                def box_normal(p, face=face):
                    ax, near_lo = face(p)
                    n = np.zeros_like(p)
                    n[np.arange(len(p)), ax] = np.where(near_lo, -1.0, 1.0)
                    return n

                def box_uv(p, face=face):
                    ax, _ = face(p)
                    return np.where(ax == 0, p[:, 2], p[:, 0]), np.where(ax == 1, p[:, 2], p[:, 1])

                consider(np.where(hit, tmin, np.inf), 4, box_normal, box_uv)
            elif kind == 1:  # sphere
                r = float(rng.uniform(0.15, 0.6))
                c = np.array([x, cam_h - r - float(rng.uniform(0, 1.0)), z])
                b = d @ c
                a = (d * d).sum(-1)
                disc = b * b - a * (float(c @ c) - r * r)
                t = np.where(disc >= 0, (b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
                consider(t, 5, lambda p, c=c, r=r: (p - c) / r,
                         lambda p, c=c, r=r: (r * np.arctan2(p[:, 0] - c[0], p[:, 2] - c[2]) * 2, p[:, 1]))
            elif kind == 2:  # fronto-parallel panel
                w2, h2 = float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.7))
                yc = float(rng.uniform(-(room_h - cam_h) + h2, cam_h - h2))
                t = z / dz
                hit = (np.abs(t * dx - x) <= w2) & (np.abs(t * dy - yc) <= h2)
                consider(np.where(hit, t, np.inf), 6, const((0, 0, -1)), lambda p: (p[:, 0], p[:, 1]))
            else:  # vertical cylinder on the floor
                r = float(rng.uniform(0.05, 0.3))
                hgt = float(rng.uniform(0.5, 2.0))
                a = dx * dx + dz * dz
                b = dx * x + dz * z
                disc = b * b - a * (x * x + z * z - r * r)
                t = np.where(disc >= 0, (b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
                yhit = t * dy
                t = np.where((yhit <= cam_h) & (yhit >= cam_h - hgt), t, np.inf)

                def cyl_normal(p, x=x, z=z, r=r):
                    return np.stack([p[:, 0] - x, np.zeros(len(p)), p[:, 2] - z], -1) / r

                consider(t, 7, cyl_normal,
                         lambda p, x=x, z=z, r=r: (r * np.arctan2(p[:, 0] - x, p[:, 2] - z) * 2, p[:, 1]))

    light = np.array([0.3, -1.0, -0.5])  # towards the light: above, slightly right, behind the camera
    light /= np.linalg.norm(light)
    rgb = np.zeros((H, W, 3))
    cls = np.full((H, W), 255, dtype=np.uint8)
    for i, (c, nfn, uvfn, trng, col) in enumerate(surfaces):
        m = sid == i
        if not m.any():
            continue
        dm = d[m]
        p = dm * best[m][:, None]  # world points of this surface's pixels (K, 3)
        u, v = uvfn(p)
        nrm = nfn(p)
        nrm = nrm / np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-9)
        # metres of surface under one pixel, along the most stretched direction (grazing angles stretch it)
        dlen = np.linalg.norm(dm, axis=-1)
        cos = np.abs((dm * nrm).sum(-1)) / dlen
        footprint = best[m] * dlen / f / np.maximum(cos, 0.05)
        t = _texture(trng, u, v, footprint)
        col2 = trng.uniform(0.05, 0.9, size=3)
        alb = col[None, :] * t[:, None] + col2[None, :] * (1 - t[:, None]) * 0.6
        shade = 0.45 + 0.55 * np.clip(nrm @ light, 0, 1)
        rgb[m] = alb * shade[:, None]
        cls[m] = c
    # mild distance falloff, then 8-bit
    fall = 1.0 / (1.0 + 0.03 * np.where(np.isfinite(best), best, 0))
    rgb = rgb * fall[..., None]
    rgb8 = np.clip(np.floor(rgb * 255 + 0.5), 0, 255).astype(np.uint8)
    depth = np.where(np.isfinite(best), best, 0).astype(np.float32)
    return rgb8, depth, cls


class SyntheticSource(Source):
    """Procedural RGB-D scenes. Splits ``train`` (``n_train``), ``val`` (``n_val``, omitted when 0),
    ``test`` (``n_test``); keys ``synth-{split}-{i:04d}``; frames ``size`` = (H, W) pixels."""

    name = "synthetic"

    def __init__(self, n_train: int = 40, n_test: int = 15, size=(240, 320), seed: int = 0, num_classes: int = 8,
                 n_val: int = 0):
        for nm, v in (("n_train", n_train), ("n_test", n_test), ("n_val", n_val)):
            if int(v) != v or v < 0:
                raise BsrError(f"{nm}: must be an integer >= 0, got {v!r}")
        try:
            h, w = (int(size[0]), int(size[1]))
        except (TypeError, ValueError, IndexError):
            raise BsrError(f"size: expected (H, W), got {size!r}") from None
        if h < 8 or w < 8 or h > 8192 or w > 8192:
            raise BsrError(f"size: {h}x{w} out of range (8..8192)")
        if not 1 <= int(num_classes) <= 255:
            raise BsrError(f"num_classes: must be in 1..255, got {num_classes}")
        self.n_train, self.n_test, self.n_val = int(n_train), int(n_test), int(n_val)
        self.size = (h, w)
        self.seed = int(seed)
        self.num_classes = int(num_classes)

    def splits(self) -> dict:
        out = {"train": [f"synth-train-{i:04d}" for i in range(self.n_train)]}
        if self.n_val:
            out["val"] = [f"synth-val-{i:04d}" for i in range(self.n_val)]
        out["test"] = [f"synth-test-{i:04d}" for i in range(self.n_test)]
        return out

    def load(self, key: str) -> Record:
        parts = str(key).split("-")
        if len(parts) != 3 or parts[0] != "synth" or parts[1] not in ("train", "val", "test") or not parts[2].isdigit():
            raise BsrError(f"synthetic: unknown key '{key}'")
        n = {"train": self.n_train, "val": self.n_val, "test": self.n_test}[parts[1]]
        if int(parts[2]) >= n:
            raise BsrError(f"synthetic: unknown key '{key}'")
        rgb, depth, cls = render_scene(_rng(self.seed, key), *self.size)
        seg = np.where(cls == 255, 255, cls % self.num_classes).astype(np.uint8)
        return Record(key=str(key), rgb=rgb, depth=depth, seg=seg)


def demo_source(n_train: int = 40, n_test: int = 15, size=(240, 320), seed: int = 0, middlebury: bool = True,
                num_classes: int = 8):
    """The demo's embedded data: synthetic train/test frames plus (in test) the Middlebury Motorcycle frame
    resized to cover ``size`` and centre-cropped (its labels are all 255 = ignore)."""
    syn = SyntheticSource(n_train=n_train, n_test=n_test, size=size, seed=seed, num_classes=num_classes)
    if not middlebury:
        return syn
    from bsrdata.sources.middlebury import MiddleburySource

    return CombinedSource(syn, MiddleburySource(size=size, split="test"), name="demo")
