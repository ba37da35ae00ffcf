"""Torch SR methods for the benchmark harness (:mod:`bsrdata.benchmark`): ``oracle`` and ``cmos``.

- ``oracle``: RRDB-SFT fed the ground-truth blur map and segmentation of each test image (the paper's
  upper bound). ``ckpt`` = an RRDB-SFT checkpoint (``rrdb_sft`` or ``rrdb_sft_noseg``).
- ``cmos``: the blind chain. ``ckpt`` = a ``blind_sr`` checkpoint (stage 3), or an RRDB-SFT checkpoint
  together with ``cmos_ckpt`` (stage 1 CMOS + stage 2 RRDB-SFT, untuned chain).

Checkpoints are folders (or their ``model.safetensors``) written by :mod:`models.checkpoint`. A checkpoint
of the wrong architecture, class count or scale is a one-line BsrError naming the file.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from bsrdata.benchmark import Method
from bsrdata.errors import BsrError
from bsrdata.metrics import to_uint8
from bsrdata.models.device import pick_device  # noqa: F401  (re-exported for cli.sr)


def ckpt_dir(path) -> str:
    """A checkpoint folder, its ``model.safetensors``, or a run folder (-> its ``last/``) -> the folder."""
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.basename(path).endswith(".safetensors"):
        return os.path.dirname(path) or "."
    if not os.path.isfile(os.path.join(path, "model.safetensors")) and \
            os.path.isfile(os.path.join(path, "last", "model.safetensors")):
        return os.path.join(path, "last")
    return path


def ckpt_sha256(path) -> str:
    """SHA-256 of a checkpoint's weights file (``model.safetensors``)."""
    d = ckpt_dir(path)
    f = os.path.join(d, "model.safetensors")
    if not os.path.isfile(f):
        raise BsrError(f"{path}: no model.safetensors (not a checkpoint folder)")
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(path, *, expect: tuple, what: str):
    """Load ``path`` with models.checkpoint and check the network class is one of ``expect``."""
    if path is None:
        raise BsrError(f"--ckpt: {what} needs a checkpoint")
    d = ckpt_dir(path)
    if not os.path.exists(d):
        raise BsrError(f"{path}: no such checkpoint")
    if not os.path.isfile(os.path.join(d, "model.safetensors")):
        raise BsrError(f"{path}: no model.safetensors (not a checkpoint folder)")
    from bsrdata.models import checkpoint

    model, config = checkpoint.load(d)
    if not isinstance(model, expect):
        names = " or ".join(c.__name__ for c in expect)
        raise BsrError(f"{path}: is a {type(model).__name__} checkpoint, {what} needs {names}")
    return model.eval(), config


def _lr_tensor(lr: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)


def _sr_image(t: torch.Tensor) -> np.ndarray:
    return to_uint8(t[0].permute(1, 2, 0).float().cpu().numpy())


class TorchSRMethod(Method):
    chunk = 4

    def __init__(self, kind: str, ckpt=None, cmos_ckpt=None, device="auto"):
        self.kind = kind
        self.label = self.spec = kind
        self.ckpt, self.cmos_ckpt = ckpt, cmos_ckpt
        self.device_name = device
        self.model = None
        self.hashes = {}

    # ---------------------------------------------------------------- loading
    def _load(self):
        from bsrdata.models.rrdb_sft import RRDBSFT

        self.device = pick_device(self.device_name)
        if self.kind == "oracle":
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
        ck = {"sr": self.ckpt} if self.kind == "oracle" else {"ckpt": self.ckpt, "cmos_ckpt": self.cmos_ckpt}
        return {"method": self.kind, "label": self.label, "checkpoints": {k: v for k, v in ck.items() if v},
                "checkpoint_sha256": self.hashes}

    @torch.no_grad()
    def run(self, samples, workdir):
        out = []
        for uid, s in samples:
            lr = _lr_tensor(s["lr"], self.device)
            if self.kind == "oracle":
                blur = torch.from_numpy(np.asarray(s["blur"], np.float32))[None, None].to(self.device)
                seg = None
                if self.sr.use_seg:
                    if s.get("seg") is None:
                        raise BsrError(f"oracle: {uid} has no segmentation labels; use an rrdb_sft_noseg checkpoint")
                    seg = torch.from_numpy(np.asarray(s["seg"]).astype(np.int64))[None].to(self.device)
                y = self.sr(lr, blur, seg)
            else:
                y = self.chain(lr)["sr"]
            out.append(_sr_image(y))
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


def make_method(name: str, ckpt=None, cmos_ckpt=None, device="auto", **_ignored) -> TorchSRMethod:
    if name not in ("oracle", "cmos"):
        raise BsrError(f"--method: unknown torch method {name!r}")
    return TorchSRMethod(name, ckpt=ckpt, cmos_ckpt=cmos_ckpt, device=device)
