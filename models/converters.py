"""``bsr convert``: checkpoints saved by other projects' code -> our checkpoint folders, one converter per arch.

:data:`CONVERTERS` maps ``--arch`` to a function ``convert(src, out_dir, **options) -> config``. The public
CMOS networks (``cmos``, ``rrdb_sft``, ``blind_sr``) go through :mod:`bsrdata.models.convert_public`; the
baselines (``manet``, ``dan``, ``dcls``, ``koalanet``; docs/baselines.md) each have their own module. A
converter reads the file safely (:func:`bsrdata.models.weights.read_weights`), maps every tensor strictly
(one BsrError line naming missing / unexpected / mis-shaped tensors, nothing written) and writes the folder
with :func:`write_converted` (atomic: the folder appears whole or not at all), recording the source file's
name, sha256 and tensor count in ``config.json``.
"""

from __future__ import annotations

import os
import shutil

from bsrdata.errors import BsrError
from bsrdata.registry import Registry

CONVERTERS = Registry("checkpoint converter")
for _arch in ("cmos", "rrdb_sft", "blind_sr"):
    CONVERTERS.declare(_arch, "bsrdata.models.convert_public:convert_arch_" + _arch)
CONVERTERS.declare("manet", "bsrdata.models.convert_manet:convert")
CONVERTERS.declare("dan", "bsrdata.models.convert_dan:convert")
CONVERTERS.declare("dcls", "bsrdata.models.convert_dcls:convert")
CONVERTERS.declare("koalanet", "bsrdata.models.convert_koalanet:convert")
del _arch


def check_out_dir(out_dir) -> str:
    """``out_dir`` as a str; BsrError unless it is absent or an empty folder."""
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise BsrError(f"{out_dir}: exists and is not an empty folder (choose another --out)")
    return out_dir


def source_record(src, state: dict, fmt: str) -> dict:
    """``config["source"]``: the file's base name, sha256, tensor count and a description of its format."""
    from bsrdata.fileio import sha256_file

    return {"file": os.path.basename(os.fspath(src)), "sha256": sha256_file(src), "tensors": len(state),
            "format": fmt}


def write_converted(out_dir, model, cfg: dict) -> dict:
    """Save ``model`` with ``cfg`` (must hold ``model.name``) as the checkpoint folder ``out_dir``, atomically."""
    from bsrdata.fileio import replace_dir, tmp_name
    from bsrdata.models.checkpoint import save

    out_dir = check_out_dir(out_dir)
    tmp = tmp_name(out_dir.rstrip(os.sep) or out_dir)
    try:
        save(tmp, model, cfg)
        replace_dir(tmp, out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return cfg


def convert(src, arch: str, out_dir, **options) -> dict:
    """Convert ``src`` (a checkpoint of ``arch``) into the folder ``out_dir``; ``options`` are the
    converter's own (``num_classes``, ``window_merge``, ...; ``None`` values are dropped)."""
    fn = CONVERTERS.get(arch)
    return fn(src, out_dir, **{k: v for k, v in options.items() if v is not None})


def no_options(arch: str, options: dict) -> None:
    """BsrError naming the first option a converter that takes none was given."""
    if options:
        k = sorted(options)[0]
        raise BsrError(f"--{k.replace('_', '-')}: not an option of --arch {arch}")
