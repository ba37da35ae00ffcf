"""A user's own RGB-D images as a source, plus the PNG helpers the real-data sources share.

Layout (``root`` is the folder given to :class:`FolderSource`)::

    root/rgb/<split>/<name>.png|.jpg|.jpeg      colour, 8-bit RGB (grey is expanded to RGB)
    root/depth/<split>/<name>.png               16-bit PNG, depth in millimetres, 0 = invalid
    root/depth/<split>/<name>.npy               or float array (H, W) in metres, 0/NaN/inf = invalid
    root/seg/<split>/<name>.png                 optional: 8-bit class index, 255 = ignore

Splits are the sub-folders of ``root/rgb`` (any names: ``train``, ``val``, ``test`` ...), in sorted
order. A flat ``root/rgb/<name>.png`` (no sub-folders) is one split named ``default_split``
(``"test"`` unless given); ``depth/`` and ``seg/`` are then flat too. Keys are the file stems and must
be unique over all splits. Labels are optional per split: a split either has a ``seg`` folder with one
label per image or none (its records have ``seg=None``).
"""

from __future__ import annotations

import os

import numpy as np

from bsrdata.errors import BsrError

RGB_EXTS = (".png", ".jpg", ".jpeg")


# ---------------------------------------------------------------------------------------------------
# PNG helpers (Pillow for reading: it names truncated and corrupt files instead of printing warnings)


def read_image(path, *, kind="any", notes=None):
    """Read an image file into a numpy array, validating what it holds.

    kind: ``"rgb"`` -> uint8 (H, W, 3). Converted, each with a line appended to ``notes`` (a list) when
    given: grey (``L``, ``LA``) and palette (``P``) images are expanded to RGB, an alpha channel is dropped
    (not composited), 16-bit RGB is rounded to 8 bits (``round(v * 255 / 65535)``); 16-bit grey and float
    images are refused (most likely a depth map in the wrong folder);
    ``"u16"`` -> uint16 (H, W), the file must be 16-bit single-channel;
    ``"u8"`` -> uint8 (H, W), the file must be 8-bit single-channel (``L`` or ``P`` mode).
    ``"any"`` -> whatever the file holds. Raises BsrError("<path>: ...") for a missing, corrupt or
    truncated file or the wrong kind of image.
    """
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BsrError(f"{path}: file not found")
    try:
        with Image.open(path) as im:
            # the file's sample depth, from the decoder's raw mode (the tile list is gone after load)
            deep = any(len(t) > 3 and ";16" in str(t[3]) for t in getattr(im, "tile", None) or ())
            im.load()
            mode = im.mode
            if kind == "rgb":
                if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                    raise BsrError(f"{path}: expected an 8-bit RGB image, found a 16-bit/float image")
                arr = None
                if deep and mode in ("RGB", "RGBA"):
                    arr = _read_rgb16(path)
                    note = "16-bit RGB (rounded to 8 bits)" + (", alpha dropped" if mode == "RGBA" else "")
                elif mode in ("L", "LA"):
                    note = "grey (expanded to RGB)" + (", alpha dropped" if mode == "LA" else "")
                elif mode == "P":
                    note = "palette (expanded to RGB)"
                elif mode in ("RGBA", "RGBa"):
                    note = "RGBA (alpha dropped)"
                elif mode != "RGB":
                    note = f"mode {mode} (converted to RGB)"
                else:
                    note = None
                if arr is None:
                    arr = np.asarray(im.convert("RGB"))
                if note and notes is not None:
                    notes.append(note)
            elif kind == "u16":
                if mode not in ("I;16", "I;16B", "I;16L", "I"):
                    raise BsrError(f"{path}: expected a 16-bit single-channel PNG, found mode {mode}")
                arr = np.asarray(im)
            elif kind == "u8":
                if mode not in ("L", "P"):
                    raise BsrError(f"{path}: expected an 8-bit single-channel PNG, found mode {mode}")
                arr = np.asarray(im)  # P: the palette indices are the values
            else:
                arr = np.asarray(im)
    except UnidentifiedImageError:
        raise BsrError(f"{path}: not a readable image (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BsrError(f"{path}: corrupt image ({exc})") from None
    if kind == "u16":
        if arr.dtype != np.uint16:
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise BsrError(f"{path}: 16-bit PNG values outside 0..65535")
            arr = arr.astype(np.uint16)
    return np.ascontiguousarray(arr)


def _read_rgb16(path):
    """A 16-bit RGB(A) PNG as uint8 RGB, rounded (Pillow would keep only the high byte)."""
    import cv2

    raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None or raw.dtype != np.uint16 or raw.ndim != 3:
        raise BsrError(f"{path}: unreadable 16-bit RGB image")
    rgb = raw[..., 2::-1] if raw.shape[2] >= 3 else raw
    return ((rgb.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def image_size(path):
    """(H, W) of an image file from its header (nothing decoded); BsrError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BsrError(f"{path}: not a readable image (corrupt or unknown format)") from None
    return h, w


FITS = ("crop", "resize")


def fit_frame(rgb, depth, seg, size, fit, path):
    """Bring one frame to ``size`` = (H, W): ``"crop"`` takes the centre (the frame must be at least that
    big), ``"resize"`` scales the colour with area averaging (shrinking) or bicubic (growing) and depth
    and labels with nearest neighbour (no depth or class is invented between objects). Returns
    ``(rgb, depth, seg, note)``."""
    import cv2

    h0, w0 = rgb.shape[:2]
    h, w = size
    if (h0, w0) == (h, w):
        return rgb, depth, seg, None
    if fit == "crop":
        if h0 < h or w0 < w:
            raise BsrError(f"{path}: {h0}x{w0} is smaller than --size {h}x{w} (use --fit resize)")
        y, x = (h0 - h) // 2, (w0 - w) // 2
        sl = (slice(y, y + h), slice(x, x + w))
        return (rgb[sl], depth[sl], None if seg is None else seg[sl], f"cropped {h0}x{w0} -> {h}x{w}")
    interp = cv2.INTER_AREA if h * w < h0 * w0 else cv2.INTER_CUBIC
    rgb = cv2.resize(rgb, (w, h), interpolation=interp)
    depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
    if seg is not None:
        seg = cv2.resize(seg, (w, h), interpolation=cv2.INTER_NEAREST)
    return rgb, depth, seg, f"resized {h0}x{w0} -> {h}x{w}"


def encode_png(arr):
    """PNG bytes of a uint8 (H,W) / (H,W,3 RGB) or uint16 (H,W) / (H,W,3) array (OpenCV encoder)."""
    import cv2

    arr = np.asarray(arr)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"encode_png: dtype {arr.dtype} not supported")
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise BsrError("png: encoding failed")
    return buf.tobytes()


def write_png_atomic(path, arr):
    """Write ``arr`` as PNG to ``path`` via a temporary name + rename, so a kill never leaves a file
    that looks complete. Raises BsrError naming the path when the folder is not writable."""
    path = os.fspath(path)
    data = encode_png(arr)
    from bsrdata.fileio import write_bytes_atomic

    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    except OSError as exc:
        raise BsrError(f"{path}: cannot write ({exc.strerror or exc})") from None
    write_bytes_atomic(path, data)


# ---------------------------------------------------------------------------------------------------


def _stems(folder, exts):
    out = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in exts and os.path.isfile(os.path.join(folder, name)):
            if stem in out:
                raise BsrError(f"{os.path.join(folder, name)}: two files with the stem {stem!r}")
            out[stem] = os.path.join(folder, name)
    return out


class FolderSource:
    """RGB-D(+labels) images from a folder tree (see the module docstring for the layout).

    ``depth_png_scale``: metres per unit of a 16-bit depth PNG (default 0.001, i.e. millimetres).
    ``num_classes``: number of label classes; when None and labels exist it is taken from the labels
    (largest id below 255, plus one), which reads every label once.
    Records: rgb uint8 (H, W, 3), depth float32 (H, W) metres with 0 = invalid, seg uint8 or None.
    """

    name = "folder"

    def __init__(self, root, *, default_split="test", depth_png_scale=0.001, num_classes=None, size=None,
                 fit="crop"):
        self.root = os.fspath(root)
        self.depth_png_scale = float(depth_png_scale)
        if fit not in FITS:
            raise BsrError(f"--fit: expected one of {', '.join(FITS)}, got {fit!r}")
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.fit = fit
        rgb_root = os.path.join(self.root, "rgb")
        if not os.path.isdir(rgb_root):
            raise BsrError(f"{rgb_root}: folder not found (expected root/rgb/<split>/<name>.png)")
        subdirs = sorted(d for d in os.listdir(rgb_root) if os.path.isdir(os.path.join(rgb_root, d)))
        flat = _stems(rgb_root, RGB_EXTS)
        if subdirs and flat:
            raise BsrError(f"{rgb_root}: mixes images and split sub-folders; use one or the other")
        layout = [(s, os.path.join(s)) for s in subdirs] if subdirs else [(default_split, "")]
        self._splits = {}
        self._files = {}  # key -> (split, rgb, depth, seg or None)
        labelled = set()
        for split, rel in layout:
            rgbs = _stems(os.path.join(rgb_root, rel), RGB_EXTS)
            if not rgbs:
                raise BsrError(f"{os.path.join(rgb_root, rel)}: no images (.png/.jpg)")
            ddir = os.path.join(self.root, "depth", rel)
            if not os.path.isdir(ddir):
                raise BsrError(f"{ddir}: folder not found (one depth file per image)")
            depths = _stems(ddir, (".png", ".npy"))
            sdir = os.path.join(self.root, "seg", rel)
            segs = _stems(sdir, (".png",)) if os.path.isdir(sdir) else None
            keys = []
            for stem, rgb in rgbs.items():
                if stem in self._files:
                    raise BsrError(f"{rgb}: key {stem!r} also appears in split {self._files[stem][0]!r}")
                if stem not in depths:
                    raise BsrError(f"{os.path.join(ddir, stem)}.png: missing depth for {rgb}")
                seg = None
                if segs is not None:
                    if stem not in segs:
                        raise BsrError(f"{os.path.join(sdir, stem)}.png: missing label for {rgb}")
                    seg = segs[stem]
                    labelled.add(split)
                self._files[stem] = (split, rgb, depths[stem], seg)
                keys.append(stem)
            self._splits[split] = keys
        if self.size is None:
            self._check_one_size()
        if num_classes is None and labelled:
            top = -1
            for split, _rgb, _d, seg in self._files.values():
                if seg is not None:
                    lab = read_image(seg, kind="u8")
                    vals = lab[lab != 255]
                    if vals.size:
                        top = max(top, int(vals.max()))
            num_classes = top + 1 if top >= 0 else None
        self.num_classes = num_classes

    def options(self) -> dict:
        """How this source reads its files, where it differs from the defaults (recorded in the manifest's
        ``source.options`` and in every shard's build id)."""
        out = {}
        if self.depth_png_scale != 0.001:
            out["depth_png_scale"] = self.depth_png_scale
        if self.size is not None:
            out.update(size=f"{self.size[0]}x{self.size[1]}", fit=self.fit)
        return out

    def _check_one_size(self):
        """Without ``size`` every frame must have one size (a shard holds frames of one size): read the
        headers and name the files when they differ."""
        sizes = {}
        for _split, rgb, _d, _s in self._files.values():
            sizes.setdefault(image_size(rgb), []).append(rgb)
        if len(sizes) > 1:
            common = max(sizes, key=lambda k: len(sizes[k]))
            odd = next(p for k, v in sizes.items() if k != common for p in v)
            desc = ", ".join(f"{h}x{w}: {len(v)}" for (h, w), v in sorted(sizes.items(), key=lambda kv: -len(kv[1])))
            raise BsrError(f"{odd}: {image_size(odd)[0]}x{image_size(odd)[1]}, but most frames are "
                           f"{common[0]}x{common[1]} (sizes {desc}); pass --size HxW (centre crop, or "
                           "--fit resize)")

    def splits(self):
        """split name -> list of keys (sorted file stems)."""
        return {s: list(k) for s, k in self._splits.items()}

    def _read_depth(self, path):
        if path.endswith(".npy"):
            try:
                d = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise BsrError(f"{path}: cannot read .npy ({exc})") from None
            if d.ndim != 2 or not np.issubdtype(d.dtype, np.number):
                raise BsrError(f"{path}: expected a 2-D numeric depth array in metres, got {d.dtype} {d.shape}")
            d = d.astype(np.float32)
            d[~np.isfinite(d) | (d < 0)] = 0.0
            return d
        raw = read_image(path, kind="u16")
        return (raw.astype(np.float64) * self.depth_png_scale).astype(np.float32)

    def load(self, key):
        from bsrdata.sources.base import Record

        if key not in self._files:
            raise BsrError(f"{self.root}: no image with key {key!r}")
        _split, rgb_path, depth_path, seg_path = self._files[key]
        notes = []
        rgb = read_image(rgb_path, kind="rgb", notes=notes)
        depth = self._read_depth(depth_path)
        if depth.shape != rgb.shape[:2]:
            raise BsrError(f"{depth_path}: size {depth.shape[1]}x{depth.shape[0]} differs from the image "
                           f"{rgb.shape[1]}x{rgb.shape[0]}")
        if not np.any(depth > 0):
            raise BsrError(f"{depth_path}: no valid depth pixel")
        seg = None
        if seg_path is not None:
            seg = read_image(seg_path, kind="u8")
            if seg.shape != rgb.shape[:2]:
                raise BsrError(f"{seg_path}: size {seg.shape[1]}x{seg.shape[0]} differs from the image "
                               f"{rgb.shape[1]}x{rgb.shape[0]}")
            if self.num_classes is not None:
                bad = (seg != 255) & (seg >= self.num_classes)
                if bad.any():
                    raise BsrError(f"{seg_path}: label {int(seg[bad].max())} outside 0..{self.num_classes - 1} "
                                   f"(255 = ignore)")
        if self.size is not None:
            rgb, depth, seg, note = fit_frame(rgb, depth, seg, self.size, self.fit, rgb_path)
            if note:
                notes.append(note)
        return Record(key=key, rgb=rgb, depth=depth, seg=seg, notes=tuple(notes))
