"""``bsr convert SRC --arch dcls``: the released DCLS weights (``DCLSx4_setting1.pth`` etc., a plain state dict
of the official ``DCLS`` module, no buffers) -> our ``dcls`` checkpoint folder (docs/baselines.md, "DCLS").

The architecture is read from the file's shapes (nf, latent, the linear network's filter sizes and so the
kernel size, the scale, nb, ng), then every tensor is mapped strictly by :func:`official_name` (one BsrError line
naming missing / unexpected / mis-shaped tensors; nothing is written). ×4 setting 1 has 964 tensors.

The released networks were trained on MATLAB-bicubic pairs (LR(i) centred on HR 4i + 1.5), our datasets use the
``direct`` grid (LR(i) = HR 4i): the converted model's ``align`` defaults to ``bicubic`` (its SR is resampled
1.5 HR px onto our grid, :func:`bsrdata.models.dcls.align_bicubic`); ``bsr bench --opt align=none`` scores it
unshifted. The choice is recorded in ``config["adaptation"]``.
"""

from __future__ import annotations

import os
import re

from bsrdata.errors import BsrError

# our name -> the official one (first matching rule; the rest of the name is kept)
_RULES = (
    (r"^estimator\.head\.", "Estimator.head.0."),
    (r"^estimator\.body\.", "Estimator.body.0."),
    (r"^estimator\.", "Estimator."),
    (r"^restorer\.features\.", "Restorer.feature_block."),
    (r"^restorer\.cls\.reduce\.", "Restorer.head2.reduce_feature."),
    (r"^restorer\.cls\.smooth\.", "Restorer.head2.grad_filter."),
    (r"^restorer\.cls\.expand\.", "Restorer.head2.expand_feature."),
    (r"^restorer\.", "Restorer."),
)
_BLOCK_RULES = (
    (r"\.blocks\.(\d+)\.branch1\.", r".body.\1.body1."),
    (r"\.blocks\.(\d+)\.branch2\.", r".body.\1.body2."),
    (r"\.blocks\.(\d+)\.fuse\.", r".body.\1.CA_body1.1."),
    (r"\.blocks\.(\d+)\.ca1\.fc\.", r".body.\1.CA_body1.2.conv_du."),
    (r"\.blocks\.(\d+)\.ca2\.fc\.", r".body.\1.CA_body2.conv_du."),
)


def official_name(name: str) -> str:
    """Our state-dict name -> the official DCLS one (``restorer.cls.smooth.0.weight`` ->
    ``Restorer.head2.grad_filter.0.weight``)."""
    for pat, rep in _RULES:
        if re.match(pat, name):
            name = re.sub(pat, rep, name, count=1)
            break
    for pat, rep in _BLOCK_RULES:
        name = re.sub(pat, rep, name)
    return name


def infer_config(state: dict, source: str) -> dict:
    """Our ``dcls`` constructor keywords from the official file's shapes (BsrError naming ``source`` when the
    tensors that fix the architecture are absent or inconsistent)."""
    def get(k):
        if k not in state:
            raise BsrError(f"{source}: not an official DCLS state dict ({k} missing)")
        return tuple(state[k].shape)

    nf = get("Restorer.conv_first.weight")[0]
    red = nf // get("Restorer.head1.weight")[0]
    dec = sorted(int(m.group(1)) for k in state if (m := re.match(r"^Estimator\.dec\.(\d+)\.weight$", k)))
    if len(dec) < 2 or dec != list(range(len(dec))):
        raise BsrError(f"{source}: not an official DCLS state dict (Estimator.dec.* layers {dec})")
    latent = get("Estimator.dec.0.weight")[1]
    filters = []  # dec.i outputs out · in · f² with 16 hidden channels (the official linear network)
    for i in dec:
        n_out = get(f"Estimator.dec.{i}.weight")[0]
        io = 16 * 3 if i in (0, dec[-1]) else 16 * 16
        f = round((n_out / io) ** 0.5)
        if f * f * io != n_out:
            raise BsrError(f"{source}: Estimator.dec.{i}.weight has {n_out} outputs, not 16 hidden channels × "
                           f"a square filter")
        filters.append(f)
    ks = sum(f - 1 for f in filters) + 1
    if "Restorer.upscale.4.weight" in state:
        scale = 4
    else:
        s2 = get("Restorer.upscale.0.weight")[0] // nf
        scale = round(s2 ** 0.5)
    ng = len({m.group(1) for k in state if (m := re.match(r"^Restorer\.body\.(\d+)\.", k))})
    nb = len({m.group(1) for k in state if (m := re.match(r"^Restorer\.body\.0\.body\.(\d+)\.", k))})
    res = len({m.group(1) for k in state if (m := re.match(r"^Restorer\.feature_block\.(\d+)\.", k))})
    est = len({m.group(1) for k in state if (m := re.match(r"^Estimator\.body\.0\.(\d+)\.", k))})
    est_nf = get("Estimator.head.0.weight")[0]
    if scale not in (2, 3, 4) or not ng or not nb:
        raise BsrError(f"{source}: not an official DCLS state dict (scale {scale}, {ng} groups of {nb} blocks)")
    return {"scale": scale, "nf": nf, "nb": nb, "ng": ng, "reduction": red, "res_blocks": res,
            "est_nf": est_nf if est_nf != nf else None, "est_blocks": est, "latent": latent, "kernel_size": ks,
            "filters": filters, "kernel_hidden": 16}


def to_ours(model, state: dict, source: str) -> dict:
    """The official ``state`` renamed to ``model``'s names, strictly (one BsrError line by official names)."""
    from bsrdata.models.weights import compare_state

    own = model.state_dict()
    names = {official_name(k): k for k in own}
    if len(names) != len(own):
        raise AssertionError("dcls: official names collide")
    rep, fit = compare_state(state, {pk: own[k] for pk, k in names.items()})
    if not rep.ok:
        raise BsrError(f"{source}: not an official DCLS checkpoint: {rep.summary()}")
    return {names[pk]: v for pk, v in fit.items()}


def convert(src, out_dir, *, align: str = "bicubic", **options) -> dict:
    """Convert the official DCLS file ``src`` into the checkpoint folder ``out_dir`` -> its config.
    ``align`` (``bicubic`` | ``none``) is the converted model's default grid alignment (module doc)."""
    from bsrdata.models.converters import check_out_dir, no_options, source_record, write_converted
    from bsrdata.models.dcls import ALIGNS, DCLS
    from bsrdata.models.weights import read_weights

    no_options("dcls", options)
    if align not in ALIGNS:
        raise BsrError(f"--align: must be one of {', '.join(ALIGNS)}, got {align!r}")
    src = os.fspath(src)
    out_dir = check_out_dir(out_dir)
    state = read_weights(src, what="official DCLS")
    kw = {**infer_config(state, src), "align": align}
    try:
        model = DCLS(**kw)
    except ValueError as exc:
        raise BsrError(f"{src}: not an official DCLS state dict ({exc})") from None
    mapped = to_ours(model, state, src)
    own = model.state_dict()
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in mapped.items()}, strict=True)
    model.eval()
    cfg = {"model": {"name": "dcls", **kw}, "arch": "dcls",
           "adaptation": {"grid": "released weights trained on MATLAB-bicubic pairs (LR(i) at HR 4i + 1.5)",
                          "align": align, "kernel_size": kw["kernel_size"], "filters": kw["filters"],
                          "note": "trained on other degradations (isotropic/anisotropic Gaussians + bicubic); "
                                  "a starting point / extra row, not a retrained baseline"},
           "source": source_record(src, state, "official DCLS state dict")}
    return write_converted(out_dir, model, cfg)
