"""Checkpoints saved by the authors' CMOS code -> our checkpoint folders (docs/cmos.md, "bsr convert").

The public files are plain PyTorch state dicts (read here with ``torch.load(weights_only=True)``; a leading
``module.`` is stripped): a CMOS file holds 2482 tensors, all under ``cmos.``; an RRDB-SFT file 498 tensors
without prefix; a BlindSR file both (2980). Our networks hold the same tensors under our own names;
:func:`public_name` gives the public name of each of ours, so the mapping is checked strictly both ways:
any missing, unexpected or mis-shaped tensor is one :class:`~bsrdata.errors.BsrError` line and nothing is
written.

``convert(src, arch, num_classes, out_dir, window_merge="legacy")`` writes ``model.safetensors`` +
``config.json`` (``model`` constructor arguments, ``source`` {file, sha256, tensors}, ``arch``,
``window_merge``) with :func:`bsrdata.models.checkpoint.save` (atomic; ``config.json`` last).
``window_merge`` defaults to ``"legacy"``: the released files predate the authors' fix of the window merge.
"""

from __future__ import annotations

import os
import re

import torch

from bsrdata.errors import BsrError

ARCHS = ("cmos", "rrdb_sft", "blind_sr")

# our GIA sub-module names -> the public ones (ConvNormAct keeps `conv` / `bn`)
_GIA = [
    (r"align\.proj1\.", "upsample_layer.down_h."),
    (r"align\.proj2\.", "upsample_layer.down_l."),
    (r"align\.flow\.", "upsample_layer.flow_make."),
    (r"align\.out\.", "upsample_layer.conv_last."),
    (r"channel\.feat([12])\.", r"channel.channel_att\1.conv_bn_relu."),
    (r"channel\.vec([12])\.", r"channel.channel_att\1.conv_1x1."),
    (r"channel\.gate([12])$", r"channel.c\1"),
    (r"spatial\.pre([12])\.", r"spatial.conv_first\1."),
    (r"spatial\.own([12])\.", r"spatial.conv\1."),
    (r"spatial\.win([12])\.", r"spatial.conv_after_window\1."),
    (r"spatial\.read([12])\.", r"spatial.conv_redu\1."),
    (r"spatial\.gate([12])$", r"spatial.s\1"),
    (r"merge1\.", "smooth2."),  # the public merge convs are crossed: y1 uses smooth2
    (r"merge2\.", "smooth1."),
]
_CMOS = [
    (r"heads\.(blur|seg)\.(\d)\.", r"heads.\2.refinement.\1."),
    (r"aux\.(blur|seg)\.", r"heads.0.decoders.\1."),
    (r"fuse_down\.seg\.(\d)\.", r"GIA_s.\1."),
    (r"fuse_down\.blur\.(\d)\.", r"GIA_b.\1."),
    (r"gia_m\.(\d)\.", r"GIA_m.\1."),
    (r"gia_l\.(\d)\.", r"GIA_l.\1."),
    (r"final\.(blur|seg)\.", r"predict.\1.last_layer."),
]
_RRDB = [
    (r"prior_blur\.", "blur_conv."),
    (r"prior_seg\.", "seg_conv."),
    (r"blocks\.(\d+)\.sft\.scale\.0\.", r"RRDB_trunk.\1.SFT.mul_conv1."),
    (r"blocks\.(\d+)\.sft\.scale\.2\.", r"RRDB_trunk.\1.SFT.mul_conv2."),
    (r"blocks\.(\d+)\.sft\.shift\.0\.", r"RRDB_trunk.\1.SFT.add_conv1."),
    (r"blocks\.(\d+)\.sft\.shift\.2\.", r"RRDB_trunk.\1.SFT.add_conv2."),
    (r"conv_trunk\.", "trunk_conv."),
    (r"upconv\.", "upsampler.0."),
]
_DENSE = re.compile(r"blocks\.(\d+)\.dense\.(\d)\.convs\.(\d)\.")


def _gia_name(rest: str) -> str:
    for pat, rep in _GIA:
        new, n = re.subn("^" + pat, rep, rest)
        if n:
            return new
    return rest


def _cmos_name(name: str) -> str:
    if name.startswith("backbone."):
        return name
    for pat, rep in _CMOS:
        m = re.match(pat, name)
        if m:
            head = m.expand(rep)
            rest = name[m.end():]
            return head + (_gia_name(rest) if head.startswith("GIA_") else rest)
    return name


def _rrdb_name(name: str) -> str:
    if name.startswith("fuse."):
        return "fuse." + _gia_name(name[len("fuse."):])
    m = _DENSE.match(name)
    if m:
        return f"RRDB_trunk.{m.group(1)}.RDB{int(m.group(2)) + 1}.conv{int(m.group(3)) + 1}." + name[m.end():]
    for pat, rep in _RRDB:
        new, n = re.subn("^" + pat, rep, name)
        if n:
            return new
    return name


def public_name(arch: str, name: str) -> str:
    """The public state-dict name of our tensor ``name`` in a network of ``arch``."""
    if arch == "cmos":
        return "cmos." + _cmos_name(name)
    if arch == "rrdb_sft":
        return _rrdb_name(name)
    if arch == "blind_sr":
        if name.startswith("cmos."):
            return "cmos." + _cmos_name(name[len("cmos."):])
        if name.startswith("sr."):
            return _rrdb_name(name[len("sr."):])
    raise ValueError(f"no public name for {arch} tensor {name!r}")


def model_config(arch: str, num_classes: int, window_merge: str = "legacy") -> dict:
    """Our ``config["model"]`` for the public network ``arch`` with ``num_classes`` classes."""
    if arch not in ARCHS:
        raise BsrError(f"--arch: unknown architecture {arch!r} (known: {', '.join(ARCHS)})")
    if window_merge not in ("legacy", "fixed"):
        raise BsrError(f"--window-merge: must be legacy or fixed, not {window_merge!r}")
    n = int(num_classes)
    if n < 2:
        raise BsrError(f"--num-classes: must be >= 2, got {n}")
    if arch == "cmos":
        return {"name": "cmos", "num_classes": n, "window_merge": window_merge}
    if arch == "rrdb_sft":
        return {"name": "rrdb_sft", "num_classes": n, "window_merge": window_merge}
    return {"name": "blind_sr", "num_classes": n, "cmos": "cmos", "sr": "rrdb_sft",
            "cmos_kw": {"window_merge": window_merge}, "sr_kw": {"window_merge": window_merge}}


def build(arch: str, num_classes: int, window_merge: str = "legacy"):
    """(our network for ``arch``, its ``config["model"]``)."""
    from bsrdata.models.checkpoint import model_kwargs
    from bsrdata.models.registry import create_model

    mcfg = model_config(arch, num_classes, window_merge)
    kw = model_kwargs(mcfg)
    if arch == "cmos":
        kw["backbone_init"] = "torch"  # the weights are replaced anyway; skip the N(0, 0.001²) draw
    return create_model(mcfg["name"], **kw), mcfg


def to_ours(model: torch.nn.Module, arch: str, state: dict, source: str = "weights") -> dict:
    """Rename the public ``state`` to ``model``'s names, strictly: one BsrError line naming the missing,
    unexpected and mis-shaped tensors (by their public names) unless every tensor fits."""
    from bsrdata.models.weights import compare_state

    own = model.state_dict()
    names = {public_name(arch, k): k for k in own}
    if len(names) != len(own):  # our naming rules must be a bijection
        raise AssertionError(f"{arch}: public names collide")
    rep, fit = compare_state(state, {pk: own[k] for pk, k in names.items()})  # reported by public names
    out = {names[pk]: v for pk, v in fit.items()}
    if not rep.ok:
        raise BsrError(f"{source}: not a public {arch} checkpoint for this class count: {rep.summary()}")
    return out


def to_public(model: torch.nn.Module, arch: str) -> dict:
    """``model``'s state dict under the public names (the inverse of :func:`to_ours`)."""
    return {public_name(arch, k): v for k, v in model.state_dict().items()}


def load_public(arch: str, state: dict, num_classes: int, window_merge: str = "legacy", source: str = "weights",
                dtype: torch.dtype | None = None):
    """(our network in eval mode holding the public ``state`` (in ``dtype``, default float32), its
    ``config["model"]``)."""
    model, mcfg = build(arch, num_classes, window_merge)
    if dtype is not None:
        model = model.to(dtype)
    mapped = to_ours(model, arch, state, source)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)
    return model.eval(), mcfg


def convert(src, arch: str, num_classes: int, out_dir, window_merge: str = "legacy") -> dict:
    """Convert the public checkpoint ``src`` into our checkpoint folder ``out_dir``; returns its config."""
    from bsrdata.models.converters import check_out_dir, source_record, write_converted
    from bsrdata.models.weights import read_weights

    src = os.fspath(src)
    model_config(arch, num_classes, window_merge)  # option errors before reading anything
    out_dir = check_out_dir(out_dir)
    state = read_weights(src, what=f"public {arch}")
    model, mcfg = load_public(arch, state, num_classes, window_merge, source=src)
    cfg = {"model": mcfg, "arch": arch, "window_merge": window_merge,
           "source": source_record(src, state, "public CMOS state dict")}
    return write_converted(out_dir, model, cfg)


def _arch_converter(arch):
    def run(src, out_dir, *, num_classes=None, window_merge="legacy", **options):
        from bsrdata.models.converters import no_options

        no_options(arch, options)
        if num_classes is None:
            raise BsrError(f"--num-classes: --arch {arch} needs the class count (40 NYUv2-BSR, 19 Cityscapes-BSR)")
        return convert(src, arch, int(num_classes), out_dir, window_merge=window_merge)

    run.__name__ = run.__qualname__ = f"convert_arch_{arch}"
    return run


convert_arch_cmos = _arch_converter("cmos")
convert_arch_rrdb_sft = _arch_converter("rrdb_sft")
convert_arch_blind_sr = _arch_converter("blind_sr")
