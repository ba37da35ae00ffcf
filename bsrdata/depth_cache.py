"""Bookkeeping of the stereo disparity cache written by ``bsr depth`` (numpy + PIL; no torch).

The cache layout is fixed in docs/API.md: ``DIR/{split}/{city}/{key}_disparity.png``, uint16 in the
Cityscapes encoding, at the left image's full resolution, each file written atomically (temp name +
rename) by :func:`bsrdata.stereo.write_disparity_png`. A file under its final name is therefore
complete; temp files of a killed run are never read and are overwritten or removed on the next run.

``DIR/depth_cache.json`` records how the cache was made (method, weights checksum, size, iters), so a
resumed run cannot silently mix disparities from different settings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from bsrdata import stereo
from bsrdata.errors import BsrError
from bsrdata.fileio import remove_temps

SPLITS = ("train", "val", "test")
SETTINGS_FILE = "depth_cache.json"


@dataclass(frozen=True)
class StereoPair:
    """One Cityscapes frame: split, key ``{city}_{seq}_{frame}``, left/right image paths, cache path."""

    split: str
    key: str
    left: str
    right: str
    out: str


def list_pairs(root, out_dir, splits=None) -> list[StereoPair]:
    """All left/right pairs under a Cityscapes ``root`` in a fixed order (split, then key).

    splits: names among train/val/test; None = those of them that exist under ``root/leftImg8bit``.
    A named split that is missing, a left image without its right image, or no pair at all ->
    BsrError.
    """
    from bsrdata.sources.cityscapes import CityscapesSource

    root = os.fspath(root)
    if not os.path.isdir(root):
        raise BsrError(f"{root}: folder not found (the Cityscapes root)")
    if splits is None:
        splits = [s for s in SPLITS if os.path.isdir(os.path.join(root, "leftImg8bit", s))]
        if not splits:
            raise BsrError(f"{root}: no leftImg8bit/{{train,val,test}} folder (not a Cityscapes root)")
    src = CityscapesSource(root, disparity="provided", splits=tuple(splits))
    pairs = []
    for split, keys in src.splits().items():
        for key in keys:
            right = src.path("rightImg8bit", key)
            if not os.path.isfile(right):
                raise BsrError(f"{right}: right image not found (needed for stereo)")
            pairs.append(StereoPair(split, key, src.path("leftImg8bit", key), right,
                                    stereo.cache_disparity_path(out_dir, split, key)))
    return pairs


def image_size(path):
    """(height, width) from an image header (no decode); BsrError if it is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except FileNotFoundError:
        raise BsrError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise BsrError(f"{path}: not a readable image") from None


def is_cached(pair: StereoPair) -> bool:
    """True when ``pair.out`` exists as a 16-bit single-channel PNG of the left image's size.

    Only the headers are read. Anything else (absent, unreadable, wrong mode or size) is False, so
    that frame is computed again and the file replaced."""
    from PIL import Image

    if not os.path.isfile(pair.out):
        return False
    try:
        with Image.open(pair.out) as im:
            ok_mode = im.mode in ("I;16", "I;16B", "I;16L", "I") and im.format == "PNG"
            size = (im.size[1], im.size[0])
    except Exception:
        return False
    return ok_mode and size == image_size(pair.left)


def remove_stale_temps(pair: StereoPair) -> int:
    """Delete leftover temp files (``<out>.tmp<pid>``) of killed runs next to ``pair.out``; count."""
    return remove_temps(pair.out)


def check_writable(out_dir) -> None:
    """Create ``out_dir`` if needed and prove a file can be written there, else BsrError."""
    from bsrdata.build import check_out_dir

    check_out_dir(out_dir)


def check_settings(out_dir, settings: dict) -> None:
    """Record ``settings`` in ``DIR/depth_cache.json``, or check a resumed cache was made with them.

    A differing record -> BsrError naming the fields that differ (use a new folder or the same
    settings). Written atomically."""
    path = os.path.join(os.fspath(out_dir), SETTINGS_FILE)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as fh:
                old = json.load(fh)
        except (OSError, ValueError):
            raise BsrError(f"{path}: unreadable cache settings file (delete it or use a new --out)") from None
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff)
            raise BsrError(f"--out {out_dir}: cache was made with other settings ({detail}); "
                           "use a new folder or the same settings")
        return
    from bsrdata.fileio import write_json_atomic

    write_json_atomic(path, settings, indent=2, sort_keys=True)
