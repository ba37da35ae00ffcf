"""``bsr bench --method kernelgan``: KernelGAN + ZSSR per test image (docs/baselines.md "KernelGAN + ZSSR").

Per distinct LR image: KernelGAN (:func:`bsrdata.models.kernelgan.estimate_kernels`, official 3,000
iterations) estimates the ×2 kernel and its analytic ×4 kernel, then ZSSR
(:func:`bsrdata.models.zssr.super_resolve`, up to 2 × 3,000 iterations) super-resolves the LR image ×4.
The harness stores each image's score as soon as it is done (``chunk = 1``), so an interrupted run resumes
at the next image.

Options: ``iters`` (``bsr bench --iters N``) replaces the official 3,000 of both parts: KernelGAN runs N
iterations with its lr drops at N·{1/4, 1/2, 3/4} and its λ-decay period 200·N/3000; ZSSR caps each of
its two stages at N (its lr rule is unchanged). ``time_budget`` (``--time-budget S``, seconds per image)
gives KernelGAN S/3 and each ZSSR stage S/3 (a stage also gets what the previous part left); a part
stops at its share and the method goes on with what it has. ``opts`` (``--opt KEY=VALUE``): ``seed``
(int, default 0; each image's seed is derived from it and the image's id), ``kernelgan_iters``,
``zssr_iters`` (override ``iters`` per part), ``zssr_crop`` (father crop, default 128), ``align``
(``official`` | ``direct``).

Alignment: the method assumes LR(i) ≈ HR(4i + 1.5) (its kernel centring and bicubic upscaling), our data
is LR(i) = HR(4i) (``direct``), so its SR is 1.5 HR px off. ``align=official`` (default) keeps the output as
the method gives it (the paper's protocol); ``align=direct`` shifts the SR by −1.5 px on both axes
(cubic spline, edge values repeated) so out(p) = SR(p + 1.5).

Each image's raw SR (float32 ``.npy``, before alignment) and record (``.json``: kernels, iterations and
seconds actually run, stop reasons, settings) are kept under ``OUT/kernelgan/<settings hash>/<uid>``
(the harness's results file holds only the scores), so a rerun with the other ``align`` reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import zlib

import numpy as np
import torch

from bsrdata.benchmark import Method
from bsrdata.errors import BsrError
from bsrdata.fileio import write_bytes_atomic, write_json_atomic
from bsrdata.metrics import to_uint8
from bsrdata.models.device import pick_device

OFFICIAL_ITERS = 3000
ALIGN = ("official", "direct")
OPTS = ("seed", "kernelgan_iters", "zssr_iters", "zssr_crop", "align")


def _int_opt(opts, key, default, lo=1):
    v = opts.get(key, default)
    if v is None:
        return None
    try:
        iv = int(str(v))
    except ValueError:
        raise BsrError(f"--opt {key}: must be an integer, got {v!r}") from None
    if iv < lo:
        raise BsrError(f"--opt {key}: must be >= {lo}, got {iv}")
    return iv


def check_opts(opts) -> dict:
    """Validated option dict (pure): unknown keys and bad values are one-line BsrErrors."""
    opts = dict(opts or {})
    bad = sorted(set(opts) - set(OPTS))
    if bad:
        raise BsrError(f"--opt: kernelgan has no option {bad[0]!r} (known: {', '.join(OPTS)})")
    out = {"seed": _int_opt(opts, "seed", 0, lo=0),
           "kernelgan_iters": _int_opt(opts, "kernelgan_iters", None),
           "zssr_iters": _int_opt(opts, "zssr_iters", None),
           "zssr_crop": _int_opt(opts, "zssr_crop", 128, lo=4)}
    align = str(opts.get("align", "official"))
    if align not in ALIGN:
        raise BsrError(f"--opt align: must be official or direct, got {align!r}")
    out["align"] = align
    return out


def shift_direct(sr: np.ndarray, shift: float = 1.5) -> np.ndarray:
    """(H, W, C) float -> out(p) = sr(p + shift) on both axes (cubic spline, edges repeated)."""
    from scipy import ndimage

    return ndimage.shift(np.asarray(sr, np.float64), (-shift, -shift, 0), order=3, mode="nearest")


def image_seed(seed: int, uid: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(uid.encode())) % (2 ** 31)


class KernelGANMethod(Method):
    """KernelGAN + ZSSR, one image at a time (see the module docstring)."""

    chunk = 1

    def __init__(self, label=None, iters=None, time_budget=None, device="auto", opts=None):
        if iters is not None and int(iters) < 1:
            raise BsrError(f"--iters: must be >= 1, got {iters}")
        if time_budget is not None and not float(time_budget) > 0:
            raise BsrError(f"--time-budget: must be > 0 seconds, got {time_budget}")
        self.spec = "kernelgan"
        self.label = label or "kernelgan"
        self.opts = check_opts(opts)
        base = OFFICIAL_ITERS if iters is None else int(iters)
        self.iters = None if iters is None else int(iters)
        self.kg_iters = self.opts["kernelgan_iters"] or base
        self.zssr_iters = self.opts["zssr_iters"] or base
        self.time_budget = None if time_budget is None else float(time_budget)
        self.device_name = device
        self.device = None
        self.manifest = None

    def settings(self) -> dict:
        """Everything that decides the raw SR (the alignment is applied afterwards)."""
        return {"kernelgan_iters": self.kg_iters, "zssr_iters_per_stage": self.zssr_iters,
                "time_budget_s": self.time_budget, "seed": self.opts["seed"], "zssr_crop": self.opts["zssr_crop"],
                "device": str(self.device) if self.device is not None else self.device_name}

    def prepare(self, data):
        if data.scale != 4:
            raise BsrError(f"{data.manifest_path}: kernelgan is ×4 (gradual 2, 4); the dataset is ×{data.scale}")
        self.device = pick_device(self.device_name)
        self.manifest = data.manifest_sha256

    def identity(self):
        return {"method": "kernelgan", **self.settings(), "align": self.opts["align"]}

    def provenance(self):
        return {"method": "kernelgan", "label": self.label, **self.settings(), "align": self.opts["align"],
                "iters_option": self.iters,
                "schedule": {"kernelgan": "Adam 2e-4 (0.5, 0.999), lr/10 at iters x {1/4, 1/2, 3/4}, "
                                          "lambda_bicubic decay period 200 x iters/3000",
                             "zssr": "gradual x4: [2,2] with k2 then [4,4] with k4, Adam 1e-3, lr rule "
                                     "(test 50, check 60, min 256, slope 5 points, ratio 1.5), stop lr<9e-6 "
                                     "or the cap; output: 2 back-projections, clipped",
                             "time_budget": "KernelGAN 1/3, each ZSSR stage 1/3 (cumulative deadlines)"},
                "alignment": ("method's own LR(i) ~ HR(4i+1.5)" if self.opts["align"] == "official"
                              else "SR shifted by -1.5 HR px (direct grid LR(i) = HR(4i))"),
                "records": "OUT/kernelgan/<settings hash>/<uid>.json (iterations, seconds, kernels)"}

    def _cache_dir(self, workdir):
        key = json.dumps({**self.settings(), "manifest": self.manifest}, sort_keys=True)
        h = hashlib.sha256(key.encode()).hexdigest()[:10]
        out = os.path.dirname(os.path.dirname(os.path.abspath(workdir))) if workdir else None
        return os.path.join(out, "kernelgan", h) if out else None

    def run(self, samples, workdir):
        from tqdm import tqdm

        out = []
        cache = self._cache_dir(workdir)
        for uid, s in samples:
            sr = self._load_cached(cache, uid)
            if sr is None:
                sr, rec = self._one(uid, s["lr"])
                if cache:
                    os.makedirs(cache, exist_ok=True)
                    import io

                    buf = io.BytesIO()
                    np.save(buf, sr.astype(np.float32))
                    write_bytes_atomic(os.path.join(cache, uid + ".npy"), buf.getvalue())
                    write_json_atomic(os.path.join(cache, uid + ".json"), rec)
                tqdm.write(f"kernelgan {uid}: KernelGAN {rec['kernelgan']['iterations']} it, ZSSR "
                           f"{rec['zssr']['iterations']} it, {rec['seconds']:.1f} s", file=sys.stderr)
            if self.opts["align"] == "direct":
                sr = shift_direct(sr)
            out.append(to_uint8(np.clip(sr, 0, 1)))
        return out

    @staticmethod
    def _load_cached(cache, uid):
        if not cache:
            return None
        p, j = os.path.join(cache, uid + ".npy"), os.path.join(cache, uid + ".json")
        if os.path.isfile(p) and os.path.isfile(j):
            try:
                return np.load(p)
            except (OSError, ValueError):
                return None
        return None

    def _one(self, uid, lr):
        from tqdm import tqdm

        from bsrdata.models.kernelgan import estimate_kernels
        from bsrdata.models.zssr import super_resolve

        seed = image_seed(self.opts["seed"], uid)
        t0 = time.monotonic()
        b = self.time_budget
        dl = (None, None, None) if b is None else (t0 + b / 3, t0 + 2 * b / 3, t0 + b)
        bar = tqdm(total=2, desc=f"kernelgan {uid}", file=sys.stderr, leave=False)
        with torch.random.fork_rng(devices=[]):
            kg = estimate_kernels(lr, iters=self.kg_iters, seed=seed, deadline=dl[0], device=self.device)
            bar.update(1)
            zs = super_resolve(lr, kg.k2, kg.k4, iters=self.zssr_iters, seed=seed + 1, crop=self.opts["zssr_crop"],
                               deadlines=dl[1:], device=self.device)
            bar.update(1)
        bar.close()
        rec = {"uid": uid, "seed": seed, "seconds": time.monotonic() - t0,
               "kernelgan": {"iterations": kg.iterations, "stopped": kg.stopped, "seconds": kg.seconds,
                             "k2_shape": list(kg.k2.shape), "k4_shape": list(kg.k4.shape),
                             "k2": kg.k2.round(6).tolist()},
               "zssr": {"iterations": zs.iterations, "stopped": zs.stopped, "seconds": zs.seconds},
               "settings": self.settings()}
        return zs.sr, rec


def make_method(label, body, *, iters=None, time_budget=None, device="auto", opts=None, **_) -> KernelGANMethod:
    """The ``kernelgan`` bench method (factory of :data:`bsrdata.benchmark.METHODS`)."""
    return KernelGANMethod(label=label, iters=iters, time_budget=time_budget, device=device, opts=opts)
