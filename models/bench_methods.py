"""Torch SR methods of the benchmark harness (:mod:`bsrdata.benchmark`); importing this module registers them.

- ``oracle``: RRDB-SFT fed the ground-truth blur map and segmentation of each test image (the paper's
  upper bound). ``ckpt`` = an RRDB-SFT checkpoint (``rrdb_sft`` or ``rrdb_sft_noseg``).
- ``cmos+rrdb_sft`` (alias ``cmos``): the blind chain, CMOS estimating σ and the segmentation for
  RRDB-SFT. ``ckpt`` = a ``blind_sr`` checkpoint (stage 3), or an RRDB-SFT checkpoint together with
  ``cmos_ckpt`` (stage 1 CMOS + stage 2 RRDB-SFT, untuned chain).

- ``manet``, ``dan``, ``dcls``, ``koalanet``: the retrained (or converted) baselines of Table 2
  (docs/baselines.md). ``ckpt`` = a checkpoint of one of the networks in :data:`BASELINES`; the network's
  ``super_resolve(lr)`` (RGB in [0, 1], (N, 3, h, w) -> (N, 3, s·h, s·w)) does the method's own input
  range, padding and output clamping. ``opts`` (``bsr bench --opt KEY=VALUE``) go to ``super_resolve``'s
  keyword arguments when the network declares them in ``bench_options``.
- ``kernelgan``: KernelGAN + ZSSR per image (``bsrdata.models.bench_kernelgan``, declared here).

Later baselines are added the same way: a factory ``f(label, body, **options) -> Method`` decorated with
:func:`bsrdata.benchmark.register_method`.

Checkpoints are folders (or their ``model.safetensors``, or a run folder with ``last/``) written by
:mod:`bsrdata.models.checkpoint`. A checkpoint of the wrong architecture, class count or scale is a
one-line BsrError naming the file.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from bsrdata.benchmark import METHODS, Method, register_method
from bsrdata.errors import BsrError
from bsrdata.fileio import sha256_file
from bsrdata.models.checkpoint import WEIGHTS, resolve_dir
from bsrdata.models.convert import image_to_tensor, tensor_to_image
from bsrdata.models.device import pick_device

ORACLE = "oracle"
CHAIN = "cmos+rrdb_sft"


def ckpt_sha256(path) -> str:
    """SHA-256 of a checkpoint's weights file (``model.safetensors``)."""
    return sha256_file(os.path.join(resolve_dir(path), WEIGHTS))


def load_checkpoint(path, *, expect: tuple, what: str):
    """Load ``path`` with models.checkpoint and check the network class is one of ``expect``."""
    if path is None:
        raise BsrError(f"--ckpt: {what} needs a checkpoint")
    d = resolve_dir(path)
    from bsrdata.models import checkpoint

    model, config = checkpoint.load(d)
    if not isinstance(model, expect):
        names = " or ".join(c.__name__ for c in expect)
        raise BsrError(f"{path}: is a {type(model).__name__} checkpoint, {what} needs {names}")
    return model.eval(), config


class TorchSRMethod(Method):
    """``oracle`` or ``cmos+rrdb_sft`` (``kind``); the checkpoints are loaded in :meth:`prepare`."""

    chunk = 4

    def __init__(self, kind: str, ckpt=None, cmos_ckpt=None, device="auto", label=None):
        self.kind = kind
        self.spec = kind
        self.label = label or kind
        self.ckpt, self.cmos_ckpt = ckpt, cmos_ckpt
        self.device_name = device
        self.model = None
        self.hashes = {}

    # ---------------------------------------------------------------- loading
    def _load(self):
        from bsrdata.models.rrdb_sft import RRDBSFT

        self.device = pick_device(self.device_name)
        if self.kind == ORACLE:
            self.cmos_ckpt = None  # the oracle uses the true maps; a --cmos-ckpt is for the cmos method
            sr, _ = load_checkpoint(self.ckpt, expect=(RRDBSFT,), what="oracle")
            self.sr, self.chain = sr, None
            self.hashes = {"sr": ckpt_sha256(self.ckpt)}
        else:
            chain, self.hashes = load_chain(self.ckpt, self.cmos_ckpt)
            self.chain, self.sr = chain, chain.sr
        for m in (self.sr, self.chain):
            if m is not None:
                m.to(self.device).eval()

    def prepare(self, data):
        if self.model is None:
            self._load()
            self.model = self.chain or self.sr
        where = self.ckpt
        if self.sr.scale != data.scale:
            raise BsrError(f"{where}: model scale x{self.sr.scale}, dataset scale x{data.scale}")
        if self.sr.use_seg and data.num_classes is not None and self.sr.num_classes != int(data.num_classes):
            raise BsrError(f"{where}: trained for {self.sr.num_classes} classes, the dataset has {data.num_classes}")

    def identity(self):
        return {"method": self.kind, "checkpoints": self.hashes}

    def provenance(self):
        ck = {"sr": self.ckpt} if self.kind == ORACLE else {"ckpt": self.ckpt, "cmos_ckpt": self.cmos_ckpt}
        return {"method": self.kind, "label": self.label, "checkpoints": {k: v for k, v in ck.items() if v},
                "checkpoint_sha256": self.hashes}

    @torch.no_grad()
    def run(self, samples, workdir):
        out = []
        for uid, s in samples:
            lr = image_to_tensor(s["lr"], self.device)
            if self.kind == ORACLE:
                blur = torch.from_numpy(np.asarray(s["blur"], np.float32))[None, None].to(self.device)
                seg = None
                if self.sr.use_seg:
                    if s.get("seg") is None:
                        raise BsrError(f"oracle: {uid} has no segmentation labels; use an rrdb_sft_noseg checkpoint")
                    seg = torch.from_numpy(np.asarray(s["seg"]).astype(np.int64))[None].to(self.device)
                y = self.sr(lr, blur, seg)
            else:
                y = self.chain(lr)["sr"]
            out.append(tensor_to_image(y))
        return out

    def close(self):
        self.model = self.sr = self.chain = None


def load_chain(ckpt, cmos_ckpt=None):
    """The blind chain from a ``blind_sr`` checkpoint, or from RRDB-SFT ``ckpt`` + CMOS ``cmos_ckpt``.

    Returns (BlindSR in eval mode on the CPU, {"blind"|"cmos"|"sr": sha256}).
    """
    from bsrdata.models.blind import BlindSR
    from bsrdata.models.rrdb_sft import RRDBSFT

    if cmos_ckpt is None:
        chain, _ = load_checkpoint(ckpt, expect=(BlindSR,), what="the blind chain (without --cmos-ckpt)")
        return chain.eval(), {"blind": ckpt_sha256(ckpt)}
    from bsrdata.models.cmos import CMOS

    sr, _ = load_checkpoint(ckpt, expect=(RRDBSFT,), what="the chain with --cmos-ckpt")
    cm, _ = load_checkpoint(cmos_ckpt, expect=(CMOS,), what="--cmos-ckpt")
    if sr.use_seg and "seg" not in cm.tasks:
        raise BsrError(f"{cmos_ckpt}: predicts no segmentation but {ckpt} needs one")
    if sr.use_seg and sr.num_classes != cm.num_classes:
        raise BsrError(f"{cmos_ckpt}: {cm.num_classes} classes, {ckpt} has {sr.num_classes}")
    return _assemble(cm, sr), {"cmos": ckpt_sha256(cmos_ckpt), "sr": ckpt_sha256(ckpt)}


def _assemble(cmos_model, sr_model):
    """A BlindSR chain around already-loaded stage-1 and stage-2 networks (CMOS frozen)."""
    from bsrdata.models.blind import BlindSR

    return BlindSR(num_classes=sr_model.num_classes, cmos=cmos_model, sr=sr_model, freeze_cmos=True).eval()


@register_method(ORACLE)
def _oracle(label, body, *, ckpt=None, device="auto", **_options) -> TorchSRMethod:
    return TorchSRMethod(ORACLE, ckpt=ckpt, device=device, label=label)


@register_method(CHAIN)
def _chain(label, body, *, ckpt=None, cmos_ckpt=None, device="auto", **_options) -> TorchSRMethod:
    return TorchSRMethod(CHAIN, ckpt=ckpt, cmos_ckpt=cmos_ckpt, device=device, label=label)


if "cmos" not in METHODS:  # a re-import (importlib.reload) keeps the alias
    METHODS.alias("cmos", CHAIN)


# ------------------------------------------------------------------------------------------- baselines
#: bench method -> the registered network names a checkpoint for it may hold
BASELINES = {
    "manet": ("manet",),
    "dan": ("dan_v1", "dan_v2"),
    "dcls": ("dcls",),
    "koalanet": ("koalanet", "koalanet_us"),
}


class NetworkSRMethod(Method):
    """A baseline network from one checkpoint, run through its ``super_resolve(lr)`` (docs/baselines.md)."""

    chunk = 4

    def __init__(self, kind: str, ckpt=None, device="auto", label=None, opts=None):
        self.kind = self.spec = kind
        self.label = label or kind
        self.ckpt = ckpt
        self.device_name = device
        self.opts = dict(opts or {})
        self.model = None
        self.config = {}
        self.hashes = {}

    def _load(self):
        from bsrdata.models import checkpoint

        if self.ckpt is None:
            raise BsrError(f"--ckpt: {self.kind} needs a checkpoint (bsr train {self.kind} or bsr convert)")
        d = resolve_dir(self.ckpt)
        name = checkpoint.read_config(d)["model"]["name"]
        allowed = BASELINES[self.kind]
        if name not in allowed:
            raise BsrError(f"{self.ckpt}: is a {name} checkpoint, {self.kind} needs {' or '.join(allowed)}")
        model, self.config = checkpoint.load(d)
        known = tuple(getattr(model, "bench_options", ()))
        bad = sorted(set(self.opts) - set(known))
        if bad:
            raise BsrError(f"--opt: {self.kind} has no option {bad[0]!r} (known: {', '.join(known) or 'none'})")
        self.device = pick_device(self.device_name)
        self.model = model.to(self.device).eval()
        self.hashes = {"model": ckpt_sha256(self.ckpt)}

    def prepare(self, data):
        if self.model is None:
            self._load()
        scale = int(getattr(self.model, "scale", data.scale))
        if scale != data.scale:
            raise BsrError(f"{self.ckpt}: model scale x{scale}, dataset scale x{data.scale}")

    def identity(self):
        return {"method": self.kind, "checkpoints": self.hashes, "opts": self.opts}

    def provenance(self):
        m = self.config.get("model", {})
        return {"method": self.kind, "label": self.label, "checkpoints": {"ckpt": self.ckpt},
                "checkpoint_sha256": self.hashes, "model": m, "opts": self.opts,
                "adaptation": self.config.get("adaptation", {}), "source": self.config.get("source")}

    @torch.no_grad()
    def run(self, samples, workdir):
        out = []
        for _, s in samples:
            lr = image_to_tensor(s["lr"], self.device)
            out.append(tensor_to_image(self.model.super_resolve(lr, **self.opts)))
        return out

    def close(self):
        self.model = None


def _baseline_factory(kind):
    def factory(label, body, *, ckpt=None, device="auto", opts=None, **_options):
        return NetworkSRMethod(kind, ckpt=ckpt, device=device, label=label, opts=opts)

    factory.__name__ = f"_{kind}"
    factory.__qualname__ = f"_{kind}"
    return factory


for _kind in BASELINES:
    if _kind not in METHODS:
        register_method(_kind)(_baseline_factory(_kind))
del _kind

METHODS.declare("kernelgan", "bsrdata.models.bench_kernelgan:make_method")
