"""PyTorch view of a built dataset (the only ``bsrdata`` module that imports torch).

``BSRDataset(root, split, group=None, crop=None, scale=4, hflip=False, zoom=(1,), zoom_rule="physical",
seed=0)`` wraps :func:`bsrdata.shards.open_dataset`. Item ``i`` is a dict:

- ``"lr"``: float32 (3, h, w) in [0, 1]; ``"hr"``: float32 (3, H, W) in [0, 1], H = scale·h
- ``"blur"``: float32 (1, H, W), σ in HR pixels
- ``"seg"``: int64 (H, W), class index, 255 = ignore (all 255 when the split has no labels)
- ``"key"``: str; ``"invariant"``: bool

``output="uint8"`` (compact items, for DataLoader workers): ``"lr"``/``"hr"`` uint8 (3, h, w) / (3, H, W) and
``"seg"`` uint8 (H, W), 3x less to move between processes; :func:`to_float` turns such a batch into exactly
the default items (÷255 in float32, seg int64) in the main process or on the device, after a ``pin_memory`` /
``non_blocking`` copy. With DataLoader workers, :class:`bsrdata.loader.RingLoader` hands the batches over in
reused shared memory (~2.9x torch's DataLoader on whole frames). A crop reads only its window from the shards
(:meth:`bsrdata.shards.DatasetView.read`; shard format 2 decodes only the tiles it touches).

Augmentation (training): ``crop`` = (H, W) HR crop (int for square; multiples of ``scale``; None = whole
frame), cut at an LR-aligned random position so LR and HR stay registered; ``hflip`` flips half the items;
``zoom`` factors z (e.g. (1, 1.2, 1.5)) enlarge the content: a region of crop/z is cut and resized to the
crop (LR and HR bilinear/bicubic, blur map bilinear, seg nearest). Enlarging content by z enlarges the
blur by z in pixels, so ``zoom_rule="physical"`` (default) multiplies σ by z; ``"paper"`` divides it by z as
the public CMOS code does. Randomness comes from (seed, epoch, index) only (``set_epoch``), so results do not
depend on worker count or order. HDF5 files are opened lazily in each worker (fork and spawn safe).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from bsrdata.errors import BsrError
from bsrdata.shards import open_dataset

ZOOM_RULES = ("physical", "paper")
OUTPUTS = ("float", "uint8")

# what a training item needs: depth and the JSON params are not decoded
_ARRAYS = ("hr", "lr", "blur", "seg")


def _pair(crop, name="crop"):
    if crop is None:
        return None
    if isinstance(crop, (int, np.integer)):
        crop = (int(crop), int(crop))
    crop = tuple(int(c) for c in crop)
    if len(crop) != 2 or min(crop) < 1:
        raise BsrError(f"{name}: expected one or two positive integers, got {crop!r}")
    return crop


def _chw_view(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> a uint8 (3, H, W) tensor view (no copy: collating copies it once, into place)."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def to_float(batch: dict, device=None, non_blocking: bool = False) -> dict:
    """A batch of ``output="uint8"`` items (or of default items) -> the default float batch, on ``device``.

    ``lr``/``hr`` uint8 -> float32 in [0, 1] (x / 255 in float32, the same values as the default items),
    ``seg`` -> int64, ``blur`` float32 as is; every other tensor is only moved, other entries are kept.
    The copy to ``device`` comes first (1 byte per value instead of 4), ``non_blocking`` for pinned batches
    (``DataLoader(pin_memory=True)``).
    """
    out = dict(batch)
    for k, t in batch.items():
        if not torch.is_tensor(t):
            continue
        if device is not None:
            t = t.to(device, non_blocking=non_blocking)
        if k in ("lr", "hr") and t.dtype == torch.uint8:
            t = t.to(torch.float32).div_(255.0)
        elif k == "seg" and t.dtype != torch.int64:
            t = t.to(torch.int64)
        out[k] = t
    return out


def _to_chw_unit(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1] (numpy: single-threaded, no torch thread pool)."""
    out = np.empty((3,) + img.shape[:2], np.float32)
    for c in range(3):
        np.divide(img[:, :, c], np.float32(255.0), out=out[c], dtype=np.float32)
    return out


HR_KEYS = ("hr", "blur", "seg")


def _shift_back(x: torch.Tensor, d: int, dim: int) -> torch.Tensor:
    """``out[..., k, ...] = x[..., k + d, ...]`` along ``dim``; the last ``d`` entries repeat the edge."""
    if d <= 0:
        return x
    n = x.shape[dim]
    idx = torch.clamp(torch.arange(n, device=x.device) + d, max=n - 1)
    return x.index_select(dim, idx)


def dihedral(batch: dict, transpose: bool, hflip: bool, vflip: bool, scale: int, direct: bool,
             fill: dict | None = None):
    """Apply one of the 8 flips/rotations to an LR/HR batch, keeping LR and HR registered.

    With the ``direct`` downsampler LR pixel (i, j) is HR pixel (s·i, s·j), a grid that a flip does not map
    onto itself: after flipping, the HR-grid maps (hr, blur, seg) are moved back by s - 1 pixels along the
    flipped axis so that LR pixel (i, j) is again HR pixel (s·i, s·j). Returns (batch, mask) with mask
    float (1, 1, H, W): 0 on the s - 1 rows/columns that moved in from outside (excluded from the loss).
    Centred downsamplers (bicubic) need no shift. ``fill`` ({key: value}) sets the moved-in entries of those
    HR-grid keys to ``value`` instead of repeating the edge (e.g. ``{"seg": 255}`` where ``seg`` is a target
    and 255 means "no loss"). Works on a batch (N, C, H, W) or on one item (C, H, W) / (H, W).

    The one grid-aware flip of the toolkit: :class:`BSRDataset`'s ``hflip`` and the SR tasks' batch
    rotations both use it.
    """
    out = dict(batch)
    keys = [k for k in ("lr",) + HR_KEYS if k in out and torch.is_tensor(out[k])]
    if transpose:
        for k in keys:
            out[k] = out[k].transpose(-2, -1)
    hr = out["hr"]
    mask = torch.ones((1, 1) + tuple(hr.shape[-2:]), dtype=hr.dtype, device=hr.device)
    d = scale - 1 if direct else 0
    for flip, dim in ((hflip, -1), (vflip, -2)):
        if not flip:
            continue
        for k in keys:
            out[k] = out[k].flip(dim)
            if k in HR_KEYS:
                out[k] = _shift_back(out[k], d, dim)
                if d and fill and k in fill:
                    out[k] = out[k].clone()
                    out[k].narrow(dim, out[k].shape[dim] - d, d).fill_(fill[k])
        if d:
            if dim == -1:
                mask[..., -d:] = 0
            else:
                mask[..., -d:, :] = 0
    for k in keys:
        out[k] = out[k].contiguous()
    return out, mask



class BSRDataset(Dataset):
    """Shards of one split (or one test group) as a torch Dataset; see the module docstring."""

    def __init__(self, root, split, group=None, crop=None, scale=4, hflip=False, zoom=(1,),
                 zoom_rule="physical", seed=0, output="float"):
        if output not in OUTPUTS:
            raise BsrError(f"output: must be one of {', '.join(OUTPUTS)}, not {output!r}")
        self.output = output
        self.root, self.split, self.group = root, split, group
        self.view = open_dataset(root, split, group)
        self.scale = int(self.view.attrs.get("scale", scale))
        if int(scale) != self.scale:
            raise BsrError(f"scale: dataset {root} has scale {self.scale}, not {scale}")
        self.crop = _pair(crop)
        if self.crop and (self.crop[0] % self.scale or self.crop[1] % self.scale):
            raise BsrError(f"crop: {self.crop[0]}x{self.crop[1]} is not a multiple of the scale {self.scale}")
        self.zoom = tuple(float(z) for z in zoom)
        if not self.zoom or min(self.zoom) < 1.0:
            raise BsrError(f"zoom: factors must be >= 1, got {zoom!r}")
        if zoom_rule not in ZOOM_RULES:
            raise BsrError(f"zoom_rule: must be one of {', '.join(ZOOM_RULES)}, not {zoom_rule!r}")
        self.zoom_rule = zoom_rule
        self.hflip = bool(hflip)
        self.seed = int(seed)
        self.epoch = 0
        self.sigma_max = float(self.view.attrs.get("sigma_max", 0.0))
        # with `direct` downsampling LR pixel i is HR pixel s*i; a mirrored pair must be re-registered
        self._flip_shift = self.scale - 1 if self.view.attrs.get("downsample", "direct") == "direct" else 0
        self._has_labels = None

    def __len__(self):
        return len(self.view)

    def item_nbytes(self) -> int:
        """Bytes of the tensors of item 0 (frame or crop size; sizes the :class:`bsrdata.loader.RingLoader`
        slots without decoding anything)."""
        if self.crop:
            hh, ww = self.crop
        else:
            hh, ww = self.view.frame_shape(0) if len(self.view) else (0, 0)
        s = self.scale
        px = 1 if self.output == "uint8" else 4
        return 3 * hh * ww * px + 3 * (hh // s) * (ww // s) * px + 4 * hh * ww + hh * ww * (px if px == 1 else 8) + 8

    def set_epoch(self, epoch: int) -> None:
        """Make the augmentation of the next pass differ (call once per epoch, in every process)."""
        self.epoch = int(epoch)

    @property
    def has_labels(self) -> bool:
        """Whether the split carries segmentation labels (reads the first sample once)."""
        if self._has_labels is None:
            self._has_labels = len(self.view) > 0 and self.view.get(0, ("seg",))["seg"] is not None
        return self._has_labels

    def _rng(self, index):
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index):
        n = len(self.view)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(index)
        h, w = self.view.frame_shape(index)
        # whole frames, no flip, no zoom: nothing to draw (a generator costs ~5 % of a whole-frame read)
        random = self.crop is not None or self.hflip or self.zoom != (1.0,)
        rng = self._rng(index) if random else None
        y, x, sh, sw, ch, cw, flip = self._plan(rng, h // self.scale, w // self.scale, index)
        s = self.scale
        whole = (sh, sw) == (h // s, w // s)
        window = None if whole else (s * y, s * (y + sh), s * x, s * (x + sw))
        d = self.view.read(index, _ARRAYS, window)
        lr, hr, blur, seg = d["lr"], d["hr"], d["blur"], d["seg"]
        if seg is None:
            seg = np.full(hr.shape[:2], 255, np.uint8)
        lr, hr, blur, seg = self._zoom(lr, hr, blur, seg, sh, sw, ch, cw)
        if self.output == "uint8":
            item = {"lr": _chw_view(lr), "hr": _chw_view(hr),
                    "seg": torch.from_numpy(np.ascontiguousarray(seg))}
        else:
            item = {"lr": torch.from_numpy(_to_chw_unit(lr)), "hr": torch.from_numpy(_to_chw_unit(hr)),
                    "seg": torch.from_numpy(np.ascontiguousarray(seg).astype(np.int64))}
        item["blur"] = torch.from_numpy(np.ascontiguousarray(blur, dtype=np.float32))[None]
        item = {k: item[k] for k in ("lr", "hr", "blur", "seg")}
        if flip:
            # the shifted-in HR columns: edge values, and labels 255 so no loss is taken there
            item, _ = dihedral(item, False, True, False, self.scale, self._flip_shift > 0, fill={"seg": 255})
        item["key"] = d["key"]
        item["invariant"] = bool(d["invariant"])
        return item

    def _plan(self, rng, lh, lw, index):
        """The random crop of item ``index`` (LR frame lh x lw), drawn before anything is read: the LR
        window (y, x, sh, sw) to cut, the LR crop size (ch, cw) it is resized to (zoom), and the flip.
        The draws (zoom, y, x, flip, in this order) depend only on (seed, epoch, index)."""
        s = self.scale
        ch, cw = (self.crop[0] // s, self.crop[1] // s) if self.crop else (lh, lw)
        if ch > lh or cw > lw:
            key = self.view.keys[index]
            raise BsrError(f"crop: {ch * s}x{cw * s} is larger than sample '{key}' ({lh * s}x{lw * s})")
        if rng is None:
            return 0, 0, lh, lw, ch, cw, False
        z = float(self.zoom[rng.integers(len(self.zoom))]) if len(self.zoom) > 1 else self.zoom[0]
        sh, sw = (max(1, int(round(ch / z))), max(1, int(round(cw / z)))) if z != 1.0 else (ch, cw)
        y = int(rng.integers(lh - sh + 1))
        x = int(rng.integers(lw - sw + 1))
        flip = bool(self.hflip and rng.random() < 0.5)  # applied by dihedral() in __getitem__
        return y, x, sh, sw, ch, cw, flip

    def _zoom(self, lr, hr, blur, seg, sh, sw, ch, cw):
        """Resize a (sh, sw) LR window (and its HR maps) cut for zoom z back to the crop size (ch, cw)."""
        s = self.scale
        if (sh, sw) != (ch, cw):
            zy, zx = ch / sh, cw / sw
            factor = math.sqrt(zy * zx)
            lr = cv2.resize(lr, (cw, ch), interpolation=cv2.INTER_LINEAR)
            hr = cv2.resize(hr, (cw * s, ch * s), interpolation=cv2.INTER_CUBIC)
            blur = cv2.resize(blur, (cw * s, ch * s), interpolation=cv2.INTER_LINEAR)
            blur = blur * factor if self.zoom_rule == "physical" else blur / factor
            seg = cv2.resize(seg, (cw * s, ch * s), interpolation=cv2.INTER_NEAREST)
        return lr, hr, blur, seg


COLLATE_KEYS = ("lr", "hr", "blur", "seg", "key", "invariant")


def collate(items):
    """Stack a list of items into a batch dict: the tensors stacked, ``key`` a list of str, ``invariant`` a
    bool tensor; other entries dropped. Equal to torch's ``default_collate`` of the items cut to
    ``COLLATE_KEYS``, which ``ring_keys`` tells :class:`bsrdata.loader.RingLoader` (it then stacks the
    items straight into its shared slots)."""
    out = {k: torch.stack([it[k] for it in items]) for k in ("lr", "hr", "blur", "seg")}
    out["key"] = [it["key"] for it in items]
    out["invariant"] = torch.tensor([it["invariant"] for it in items])
    return out


collate.ring_keys = COLLATE_KEYS
