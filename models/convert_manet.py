"""``bsr convert SRC --arch manet``: the released MANet weights -> our ``manet`` / ``manet_estimator`` /
``manet_rrdb_sft`` checkpoint folders (docs/baselines.md, "MANet", "Released weights").

The official files are plain state dicts (no ``module.`` prefix after :func:`bsrdata.models.weights.read_weights`):

- stage 3 (``stage3_MANet+RRDB_x4.pth``, 467 tensors): ``pca_matrix`` (1, K², n, 1, 1), ``kernel_estimation.*``
  (80) and the restorer (``conv_first``, ``RRDB_trunk.{i}.SFT.{mul,add}_conv{1,2}``,
  ``RRDB_trunk.{i}.RDB{1-3}.conv{1-5}``, ``trunk_conv``, ``upsampler.0``) -> ``manet``;
- stage 1 (``stage1_MANet_x4.pth``, 80 tensors, ``kernel_estimation.*`` only) -> ``manet_estimator``;
- stage 2 (``stage2_RRDB_x4.pth``, 387 tensors: ``pca_matrix`` + restorer) -> ``manet_rrdb_sft``.

The stage is detected from the names; the architecture (kernel size, widths, block counts, code length, MAConv
split) from the shapes. Every tensor is mapped by name (:func:`official_to_ours`) and loaded strictly: a
missing, unexpected or mis-shaped tensor is one BsrError line and nothing is written. The file's own
``pca_matrix`` becomes the buffer (``pca: external``, fitted by the authors on their shifted anisotropic
kernels). ``manet`` checkpoints get ``output_shift`` 1.5 (the option ``output_shift``): the weights were trained
on LR(i) ≈ HR(4i − 1.5), so on the direct grid LR(i) = HR(4i) their SR content sits 1.5 HR px up-left;
``bsr bench --opt align=0`` scores them unshifted.
"""

from __future__ import annotations

import re

import torch

from bsrdata.errors import BsrError

OFFICIAL_ALIGN = 1.5  # HR px: LR(i) ≈ HR(4i − 1.5) in the official training data

_BLOCK = [  # MABlock internals: official "res.{0|2}.fc{i}.{0|2}" / "res.{0|2}.conv{i}"
    (re.compile(r"^res\.(0|2)\.fc(\d+)\.(0|2)\.(weight|bias)$"),
     lambda m: f"ma{1 if m[1] == '0' else 2}.affine.{m[2]}.{m[3]}.{m[4]}"),
    (re.compile(r"^res\.(0|2)\.conv(\d+)\.(weight|bias)$"),
     lambda m: f"ma{1 if m[1] == '0' else 2}.convs.{m[2]}.{m[3]}"),
]
_SFT = {"mul_conv1": "scale.0", "mul_conv2": "scale.2", "add_conv1": "shift.0", "add_conv2": "shift.2"}


def _block(rest: str):
    for pat, fn in _BLOCK:
        m = pat.match(rest)
        if m:
            return fn(m)
    return None


def _estimator_name(rest: str, est_nb: int):
    """An official ``kernel_estimation.`` sub-name -> ours inside :class:`KernelEstimator`, or None."""
    m = re.match(r"^m_(head|tail)\.(weight|bias)$", rest)
    if m:
        return f"{m[1]}.{m[2]}"
    m = re.match(r"^m_down1\.(\d+)\.(.+)$", rest)
    if m:
        i = int(m[1])
        if i == est_nb:
            return f"down.{m[2]}" if m[2] in ("weight", "bias") else None
        b = _block(m[2]) if i < est_nb else None
        return f"down_blocks.{i}.{b}" if b else None
    m = re.match(r"^m_up1\.(\d+)\.(.+)$", rest)
    if m:
        i = int(m[1])
        if i == 0:
            return f"up.{m[2]}" if m[2] in ("weight", "bias") else None
        b = _block(m[2]) if i <= est_nb else None
        return f"up_blocks.{i - 1}.{b}" if b else None
    if est_nb == 1 and rest.startswith("m_body.res."):  # one block: the official helper drops the Sequential
        b = _block(rest[len("m_body."):])
        return f"body.0.{b}" if b else None
    m = re.match(r"^m_body\.(\d+)\.(.+)$", rest)
    if m and est_nb > 1:
        b = _block(m[2]) if int(m[1]) < est_nb else None
        return f"body.{m[1]}.{b}" if b else None
    return None


def _restorer_name(name: str):
    """An official restorer name -> ours inside :class:`Restorer`, or None."""
    simple = {"conv_first": "head", "trunk_conv": "trunk", "upsampler.0": "tail"}
    m = re.match(r"^(conv_first|trunk_conv|upsampler\.0)\.(weight|bias)$", name)
    if m:
        return f"{simple[m[1]]}.{m[2]}"
    m = re.match(r"^RRDB_trunk\.(\d+)\.SFT\.(mul_conv1|mul_conv2|add_conv1|add_conv2)\.(weight|bias)$", name)
    if m:
        return f"blocks.{m[1]}.sft.{_SFT[m[2]]}.{m[3]}"
    m = re.match(r"^RRDB_trunk\.(\d+)\.RDB([1-3])\.conv([1-5])\.(weight|bias)$", name)
    if m:
        return f"blocks.{m[1]}.dense.{int(m[2]) - 1}.convs.{int(m[3]) - 1}.{m[4]}"
    return None


def official_to_ours(name: str, kind: str, est_nb: int = 1):
    """Official tensor name -> our state-dict name for the network ``kind`` (``manet``, ``manet_estimator``,
    ``manet_rrdb_sft``), or None when the name has no place in it."""
    if name == "pca_matrix":
        return None if kind == "manet_estimator" else "pca_matrix"
    if name.startswith("kernel_estimation."):
        if kind == "manet_rrdb_sft":
            return None
        n = _estimator_name(name[len("kernel_estimation."):], est_nb)
        return None if n is None else (n if kind == "manet_estimator" else f"estimator.{n}")
    if kind == "manet_estimator":
        return None
    n = _restorer_name(name)
    return None if n is None else (n if kind == "manet_rrdb_sft" else f"restorer.{n}")


def _block_official(rest: str):
    m = re.match(r"^ma([12])\.(affine|convs)\.(\d+)\.(.+)$", rest)
    if not m:
        return None
    res = "res.0" if m[1] == "1" else "res.2"
    return f"{res}.fc{m[3]}.{m[4]}" if m[2] == "affine" else f"{res}.conv{m[3]}.{m[4]}"


def ours_to_official(name: str, kind: str, est_nb: int = 1):
    """The inverse of :func:`official_to_ours` (names in messages about missing tensors), or None."""
    if name == "pca_matrix":
        return name
    if kind == "manet":
        for ours, sub in (("estimator.", "manet_estimator"), ("restorer.", "manet_rrdb_sft")):
            if name.startswith(ours):
                return ours_to_official(name[len(ours):], sub, est_nb)
        return None
    if kind == "manet_estimator":
        m = re.match(r"^(head|tail|down|up)\.(weight|bias)$", name)
        if m:
            part = {"head": "m_head", "tail": "m_tail", "down": f"m_down1.{est_nb}", "up": "m_up1.0"}[m[1]]
            return f"kernel_estimation.{part}.{m[2]}"
        m = re.match(r"^(down_blocks|body|up_blocks)\.(\d+)\.(.+)$", name)
        b = _block_official(m[3]) if m else None
        if b is None:
            return None
        j = int(m[2])
        part = {"down_blocks": f"m_down1.{j}", "up_blocks": f"m_up1.{j + 1}",
                "body": "m_body" if est_nb == 1 else f"m_body.{j}"}[m[1]]
        return f"kernel_estimation.{part}.{b}"
    m = re.match(r"^(head|trunk|tail)\.(weight|bias)$", name)
    if m:
        return f"{ {'head': 'conv_first', 'trunk': 'trunk_conv', 'tail': 'upsampler.0'}[m[1]]}.{m[2]}"
    m = re.match(r"^blocks\.(\d+)\.sft\.(scale|shift)\.(0|2)\.(weight|bias)$", name)
    if m:
        return f"RRDB_trunk.{m[1]}.SFT.{'mul' if m[2] == 'scale' else 'add'}_conv{1 if m[3] == '0' else 2}.{m[4]}"
    m = re.match(r"^blocks\.(\d+)\.dense\.(\d)\.convs\.(\d)\.(weight|bias)$", name)
    if m:
        return f"RRDB_trunk.{m[1]}.RDB{int(m[2]) + 1}.conv{int(m[3]) + 1}.{m[4]}"
    return None


def _shape(state, name, src, dims):
    t = state.get(name)
    if not isinstance(t, torch.Tensor) or t.dim() != dims:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else "missing"
        raise BsrError(f"{src}: not a MANet state dict: {name} is {got}, expected a {dims}-d tensor")
    return tuple(t.shape)


def infer_arch(state: dict, src: str = "weights") -> tuple:
    """(network name, constructor kwargs) from an official state dict's names and shapes."""
    has_est = any(k.startswith("kernel_estimation.") for k in state)
    has_sr = "conv_first.weight" in state or any(k.startswith("RRDB_trunk.") for k in state)
    if not (has_est or has_sr):
        raise BsrError(f"{src}: not a MANet state dict (no kernel_estimation.* or conv_first / RRDB_trunk tensors)")
    kind = "manet" if has_est and has_sr else ("manet_estimator" if has_est else "manet_rrdb_sft")
    kw = {"scale": 4}
    if has_est:
        tail = _shape(state, "kernel_estimation.m_tail.weight", src, 4)
        ks = int(round(tail[0] ** 0.5))
        if ks * ks != tail[0]:
            raise BsrError(f"{src}: kernel_estimation.m_tail.weight has {tail[0]} outputs, not a square kernel")
        head = _shape(state, "kernel_estimation.m_head.weight", src, 4)
        downs = {int(m[1]) for k in state for m in [re.match(r"^kernel_estimation\.m_down1\.(\d+)\.", k)] if m}
        splits = {int(m[1]) for k in state
                  for m in [re.match(r"^kernel_estimation\.m_down1\.0\.res\.0\.fc(\d+)\.0\.weight$", k)] if m}
        kw.update(kernel_size=ks, est_nf=int(head[0]), est_nb=max(1, max(downs, default=1)),
                  split=max(2, len(splits)))
    if has_sr:
        first = _shape(state, "conv_first.weight", src, 4)
        nf = int(first[0])
        blocks = {int(m[1]) for k in state for m in [re.match(r"^RRDB_trunk\.(\d+)\.", k)] if m}
        mul = _shape(state, "RRDB_trunk.0.SFT.mul_conv1.weight", src, 4)
        gc = _shape(state, "RRDB_trunk.0.RDB1.conv1.weight", src, 4)[0]
        up = _shape(state, "upsampler.0.weight", src, 4)[0]
        scale = int(round((up / 3) ** 0.5))
        kw.update(nf=nf, nb=max(blocks, default=-1) + 1, gc=int(gc), code_length=int(mul[1]) - nf, scale=scale)
        if "kernel_size" not in kw:
            pca = state.get("pca_matrix")
            if not isinstance(pca, torch.Tensor):
                raise BsrError(f"{src}: not a MANet stage-2 state dict: pca_matrix missing")
            k2 = int(pca.reshape(-1).numel() // max(1, kw["code_length"]))
            ks = int(round(k2 ** 0.5))
            kw["kernel_size"] = ks if ks % 2 else ks + 1
        kw.update(pca="external", pca_sigma_max=None)
    if kind == "manet_estimator":
        kw = {k: kw[k] for k in ("kernel_size", "est_nf", "est_nb", "split", "scale")}
    return kind, kw


def convert(src, out_dir, **options) -> dict:
    """Map the official MANet file ``src`` strictly into a new checkpoint folder ``out_dir`` -> its config.

    Options: ``output_shift`` (HR px, ``manet`` files only; default 1.5 for the official grid, 0 to keep the
    network's raw output)."""
    from bsrdata.models.converters import check_out_dir, source_record, write_converted
    from bsrdata.models.registry import create_model
    from bsrdata.models.weights import compare_state, read_weights

    shift = options.pop("output_shift", OFFICIAL_ALIGN)
    if options:
        k = sorted(options)[0]
        raise BsrError(f"--{k.replace('_', '-')}: not an option of --arch manet")
    src = str(src)
    check_out_dir(out_dir)
    state = read_weights(src, what="MANet")
    kind, kw = infer_arch(state, src)
    if kind == "manet":
        kw["output_shift"] = float(shift)
    try:
        model = create_model(kind, **kw)
    except ValueError as exc:
        raise BsrError(f"{src}: not a MANet state dict ({exc})") from None
    if "pca_matrix" in state and isinstance(state["pca_matrix"], torch.Tensor) and state["pca_matrix"].dim() == 5:
        p = state["pca_matrix"]
        state = {**state, "pca_matrix": p.reshape(p.shape[1], p.shape[2]) if p.shape[0] == 1 and p.shape[3:] == (1, 1)
                 else p}
    est_nb = kw.get("est_nb", 1)
    report, take = compare_state(state, model.state_dict(), rename=lambda k: official_to_ours(k, kind, est_nb))
    if not report.ok:  # names in the message are the file's own
        report.missing = [ours_to_official(k, kind, est_nb) or k for k in report.missing]
        arch = ", ".join(f"{k} {v}" for k, v in kw.items() if k in ("kernel_size", "est_nf", "nf", "nb"))
        raise BsrError(f"{src}: weights do not fit {kind} ({arch}): {report.summary()}")
    model.load_state_dict(take, strict=True)
    cfg = {"model": {"name": kind, **kw}, "source": source_record(src, state, "MANet official state dict (.pth)"),
           "adaptation": {
               "weights": "released MANet weights (DIV2K/Flickr2K, anisotropic variance-parameterised Gaussians, "
                          "one kernel per patch), not retrained on this dataset",
               "pca": "the file's own pca_matrix (fitted on the authors' shifted 21x21 kernels)",
               "grid": (f"trained on LR(i) ~ HR(4i - 1.5); SR output shifted by {kw['output_shift']} HR px "
                        "(model.output_shift; bsr bench --opt align=X overrides)") if kind == "manet" else
                       "trained on LR(i) ~ HR(4i - 1.5)",
           }}
    return write_converted(out_dir, model, cfg)
