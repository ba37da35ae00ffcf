"""``bsr convert SRC --arch dan [--variant v1|v2]``: the released DAN state dicts -> our checkpoint folders.

The released files (docs/baselines.md, "DAN") are plain state dicts loaded strictly by the official code:
three buffers ``encoder`` (1, k², code), ``init_kernel`` (1, k, k), ``init_ker_map`` (1, code), then
``Restorer.*`` and ``Estimator.*``. v1 (×4, setting 1) holds 379 tensors (``Restorer.body.{i}.body.{0,2}``
the CRB convs, ``…body.3.body.{0,2}`` its channel attention, ``Estimator.head_HR`` 9×9, ``Estimator.out``);
v2 463 (``Restorer.body.{g}.body.{b}.body{1,2}.{0,2}`` the DPCB convs, ``Estimator.head_HR.0`` 17×17,
``Estimator.tail.{0,2}``). :func:`official_name` gives the official name of each of our tensors, so the
mapping is checked strictly both ways: a missing, unexpected or mis-shaped tensor is one BsrError line and
nothing is written.

The architecture is read from the file: the version from the names (``--variant`` overrides), the widths
(nf, nb, ng, code length, kernel size, estimator width and blocks, scale) from the shapes. The file's own
``encoder`` becomes the PCA basis (``pca: checkpoint``). The weights were trained on bicubic-downsampled LR
(LR(i) ≈ HR(4i + 1.5)), so the checkpoint records ``grid: bicubic`` and ``super_resolve`` shifts its
output by 1.5 HR px by default (``bsr bench --opt align=none`` to score it unshifted).
"""

from __future__ import annotations

import os
import re

import torch

from bsrdata.errors import BsrError

VARIANTS = ("v1", "v2")
BUFFERS = ("encoder", "init_kernel", "init_ker_map")

# our name (regex) -> official name; the Upscale convs are handled in _upscale_name
_V1 = [
    (r"restorer\.head\.", "Restorer.head."),
    (r"restorer\.blocks\.(\d+)\.conv1\.", r"Restorer.body.\1.body.0."),
    (r"restorer\.blocks\.(\d+)\.conv2\.", r"Restorer.body.\1.body.2."),
    (r"restorer\.blocks\.(\d+)\.att\.squeeze\.", r"Restorer.body.\1.body.3.body.0."),
    (r"restorer\.blocks\.(\d+)\.att\.excite\.", r"Restorer.body.\1.body.3.body.2."),
    (r"restorer\.fusion\.", "Restorer.fusion."),
    (r"estimator\.head_lr\.", "Estimator.head_LR."),
    (r"estimator\.head_sr\.", "Estimator.head_HR."),
    (r"estimator\.blocks\.(\d+)\.conv1\.", r"Estimator.body.\1.body.0."),
    (r"estimator\.blocks\.(\d+)\.conv2\.", r"Estimator.body.\1.body.2."),
    (r"estimator\.blocks\.(\d+)\.att\.squeeze\.", r"Estimator.body.\1.body.3.body.0."),
    (r"estimator\.blocks\.(\d+)\.att\.excite\.", r"Estimator.body.\1.body.3.body.2."),
    (r"estimator\.out\.", "Estimator.out."),
]
_DPCB = {"a1": "body1.0", "a2": "body1.2", "b1": "body2.0", "b2": "body2.2"}
_V2 = [
    (r"restorer\.head_lr\.", "Restorer.head1."),
    (r"restorer\.head_code\.", "Restorer.head2."),
    (r"restorer\.groups\.(\d+)\.blocks\.(\d+)\.(a1|a2|b1|b2)\.", lambda m: f"Restorer.body.{m[1]}.body.{m[2]}."
     f"{_DPCB[m[3]]}."),
    (r"restorer\.fusion\.", "Restorer.fusion."),
    (r"estimator\.head_lr\.", "Estimator.head_LR.0."),
    (r"estimator\.head_sr\.", "Estimator.head_HR.0."),
    (r"estimator\.group\.blocks\.(\d+)\.(a1|a2|b1|b2)\.", lambda m: f"Estimator.body.body.{m[1]}.{_DPCB[m[2]]}."),
    (r"estimator\.tail_conv\.", "Estimator.tail.0."),
    (r"estimator\.tail_fc\.", "Estimator.tail.2."),
]
_UP = re.compile(r"restorer\.up\.(steps\.(\d)|out)\.")


def official_name(version: str, name: str, scale: int = 4) -> str:
    """The official state-dict name of our tensor ``name`` in a DAN ``version`` network of ``scale``."""
    if name in BUFFERS:
        return name
    m = _UP.match(name)
    if m:  # Sequential(conv, PixelShuffle, [conv, PixelShuffle,] conv): convs at 0, 2 (, 4)
        n_steps = 2 if scale == 4 else 1
        idx = 2 * int(m[2]) if m[2] is not None else 2 * n_steps
        return f"Restorer.upscale.{idx}." + name[m.end():]
    for pat, rep in (_V1 if version == "v1" else _V2):
        m = re.match(pat, name)
        if m:
            head = rep(m) if callable(rep) else m.expand(rep)
            return head + name[m.end():]
    raise ValueError(f"no official name for DAN {version} tensor {name!r}")


def detect_variant(state: dict, source: str = "weights") -> str:
    """``v1`` or ``v2`` from the tensor names (BsrError when neither layout fits)."""
    if "Restorer.head1.weight" in state or "Estimator.tail.2.weight" in state:
        return "v2"
    if "Restorer.head.weight" in state or "Estimator.out.weight" in state:
        return "v1"
    raise BsrError(f"{source}: not a DAN state dict (no Restorer.head / Restorer.head1 tensors; "
                   f"{len(state)} tensors)")


def _count(state, pattern):
    return len({m[1] for k in state for m in [re.match(pattern, k)] if m})


def _shape(state, key, source, dim):
    t = state.get(key)
    if not isinstance(t, torch.Tensor) or t.dim() <= dim:
        raise BsrError(f"{source}: not a DAN state dict of this variant ({key} missing or not a tensor)")
    return int(t.shape[dim])


def architecture(state: dict, variant: str, source: str = "weights") -> dict:
    """Our constructor keywords for the network the official ``state`` holds (widths read from shapes)."""
    enc = state.get("encoder")
    if not isinstance(enc, torch.Tensor) or enc.dim() != 3 or enc.shape[0] != 1:
        raise BsrError(f"{source}: encoder must be a (1, k*k, code) tensor, got "
                       f"{tuple(enc.shape) if isinstance(enc, torch.Tensor) else 'none'}")
    kk, code = int(enc.shape[1]), int(enc.shape[2])
    k = int(round(kk ** 0.5))
    if k * k != kk or k % 2 == 0:
        raise BsrError(f"{source}: encoder has {kk} rows, not the square of an odd kernel size")
    ups = _count(state, r"Restorer\.upscale\.(\d+)\.weight")
    if ups == 3:
        scale = 4
    else:
        c = _shape(state, "Restorer.upscale.0.weight", source, 0)
        nf = _shape(state, "Restorer.fusion.weight", source, 0)
        scale = int(round((c / nf) ** 0.5))
    kw = {"scale": scale, "nf": _shape(state, "Restorer.fusion.weight", source, 0), "code_len": code,
          "kernel_size": k, "loops": 4, "pca": "checkpoint", "grid": "bicubic"}
    if variant == "v1":
        kw["nb"] = _count(state, r"Restorer\.body\.(\d+)\.body\.0\.weight")
        kw["est_nf"] = _shape(state, "Estimator.head_LR.weight", source, 0)
        kw["est_blocks"] = _count(state, r"Estimator\.body\.(\d+)\.body\.0\.weight")
    else:
        kw["ng"] = _count(state, r"Restorer\.body\.(\d+)\.body\.0\.body1\.0\.weight")
        kw["nb"] = _count(state, r"Restorer\.body\.0\.body\.(\d+)\.body1\.0\.weight")
        kw["est_nf"] = _shape(state, "Estimator.head_LR.0.weight", source, 0)
        kw["est_blocks"] = _count(state, r"Estimator\.body\.body\.(\d+)\.body1\.0\.weight")
    for key in ("nb", "est_blocks") + (("ng",) if variant == "v2" else ()):
        if kw[key] < 1:
            raise BsrError(f"{source}: not a DAN {variant} state dict (no {key} blocks found)")
    return kw


def load_official(state: dict, variant: str | None = None, source: str = "weights"):
    """(our DAN in eval mode holding the official ``state``, its ``config["model"]``)."""
    from bsrdata.models.registry import create_model
    from bsrdata.models.weights import compare_state

    variant = variant or detect_variant(state, source)
    if variant not in VARIANTS:
        raise BsrError(f"--variant: must be v1 or v2, got {variant!r}")
    kw = architecture(state, variant, source)
    name = f"dan_{variant}"
    try:
        model = create_model(name, **kw)
    except ValueError as exc:
        raise BsrError(f"{source}: not a DAN {variant} state dict ({exc})") from None
    own = model.state_dict()
    names = {official_name(variant, k, kw["scale"]): k for k in own}
    if len(names) != len(own):
        raise AssertionError(f"DAN {variant}: official names collide")
    rep, fit = compare_state(state, {pk: own[k] for pk, k in names.items()})
    if not rep.ok:
        raise BsrError(f"{source}: not an official DAN {variant} checkpoint: {rep.summary()}")
    model.load_state_dict({names[pk]: v.to(own[names[pk]].dtype) for pk, v in fit.items()}, strict=True)
    return model.eval(), {"name": name, **kw}


def to_official(model) -> dict:
    """``model``'s state dict under the official names (the inverse of :func:`load_official`)."""
    return {official_name(model.version, k, model.scale): v for k, v in model.state_dict().items()}


def convert(src, out_dir, variant: str | None = None, **options) -> dict:
    """Convert the official DAN file ``src`` into the checkpoint folder ``out_dir``; returns its config."""
    from bsrdata.models.converters import check_out_dir, no_options, source_record, write_converted
    from bsrdata.models.weights import read_weights

    no_options("dan", options)
    if variant is not None and variant not in VARIANTS:
        raise BsrError(f"--variant: must be v1 or v2 for --arch dan, got {variant!r}")
    src = os.fspath(src)
    out_dir = check_out_dir(out_dir)
    state = read_weights(src, what="DAN")
    model, mcfg = load_official(state, variant, source=src)
    v = mcfg["name"][-2:]
    cfg = {"model": mcfg, "arch": "dan", "variant": v,
           "source": source_record(src, state, f"official DAN {v} state dict"),
           "adaptation": {"pca": "the checkpoint's own encoder (the official PCA matrix)",
                          "grid": "trained on bicubic LR (LR(i) ~ HR(4i+1.5)); super_resolve shifts the SR "
                                  "image by 1.5 HR px (align=auto); --opt align=none disables it",
                          "kernel": "one kernel per image (space-invariant model)"}}
    return write_converted(out_dir, model, cfg)
