"""``bsr convert SRC --arch koalanet``: the official KOALAnet variables (exported to ``.npz``) -> our ``koalanet``.

The released weights are a TensorFlow 1 checkpoint (``.index`` + ``.data-*`` tensor bundle). That format is
not read here (no TensorFlow; a hand-written reader of the bundle's SSTable could not be checked against a
real file): give an ``.index`` / ``.data`` file or the checkpoint folder and :func:`convert` answers with one
BsrError line saying how to export it. The export (run where TF 1.x is installed; docs/baselines.md):

    import numpy as np, tensorflow as tf
    r = tf.train.NewCheckpointReader("pretrained_ckpt/upsampling_network_x4/model.ckpt-XXXX")
    np.savez("koalanet_x4.npz", **{k: r.get_tensor(k) for k in r.get_variable_to_shape_map()})

Mapping (:func:`tf_names`): the variable names follow TF1's automatic layer naming in the official graph's
scopes (``SISR_DDF`` = downsampling network, ``SISR_DUF`` = upsampling network; each ``tf.layers`` conv is
``conv2d``, ``conv2d_1``, ... within its variable scope, with ``kernel`` and ``bias``). They were derived
from the structure of the official graph, **not read from a released file**: a mismatch is reported
strictly (missing / unexpected / mis-shaped names, nothing written). Optimiser slots (``…/Adam``,
``…/Adam_1``), ``beta*_power`` and ``global_step`` are skipped.

Layouts: conv kernels HWIO -> OIHW, transposed-conv kernels [h, w, out, in] -> (in, out, h, w) (both
``permute(3, 2, 0, 1)``; TF "SAME" k4 s2 equals PyTorch padding 1, no flip). ``tf.depth_to_space`` orders
its input channels (sub-row, sub-col, channel) and PyTorch's PixelShuffle (channel, sub-row, sub-col), so the
output channels of the two convolutions before a depth-to-space in the RGB branch are permuted
(:func:`d2s_perm`). The filter branch needs none: the official graph splits its t²·16 channels into t² taps
of 16 sub-pixels, which is our ``tap·16 + sub`` order; the kernel channels (u·d + v) are row-major in both.

The released network is the official one: d 20, the official window placement (centre at HR 4i + 1.5),
trained on DIV2K with bicubic-and-Gaussian kernels; recorded in ``config["adaptation"]``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from bsrdata.errors import BsrError

SKIP_SUFFIXES = ("/Adam", "/Adam_1")
SKIP_NAMES = ("global_step", "beta1_power", "beta2_power")


def d2s_perm(channels: int, r: int = 2) -> np.ndarray:
    """Index array ``perm`` with ours[o] = tf[perm[o]] for a conv feeding depth-to-space by ``r``:
    ours o = c·r² + s (PixelShuffle), TF o = s·C + c (depth_to_space), C = channels / r²."""
    c_out = channels // (r * r)
    c, s = np.meshgrid(np.arange(c_out), np.arange(r * r), indexing="ij")
    return (s * c_out + c).reshape(-1)


def tf_names(nb: int = 12, n_koala: int = 5) -> dict:
    """Our parameter name prefix (``ds.enc0.conv``) -> the official TF layer scope (``SISR_DDF/...``)."""
    m = {}
    for lv in (0, 1):
        base = f"SISR_DDF/enc_block_res/{lv}"
        m[f"ds.enc{lv}.conv"] = f"{base}/conv2d"
        for b in (0, 1):
            m[f"ds.enc{lv}.blocks.{b}.conv1"] = f"{base}/res_block/{b}/conv2d"
            m[f"ds.enc{lv}.blocks.{b}.conv2"] = f"{base}/res_block/{b}/conv2d_1"
    m["ds.mid.conv"] = "SISR_DDF/bottleneck_res/conv2d"
    m["ds.mid.blocks.0.conv1"] = "SISR_DDF/bottleneck_res/Residual_block/conv2d"
    m["ds.mid.blocks.0.conv2"] = "SISR_DDF/bottleneck_res/Residual_block/conv2d_1"
    for lv in (0, 1):
        base = f"SISR_DDF/dec_block_res/{lv}"
        m[f"ds.dec{lv}.up"] = f"{base}/conv2d_transpose"
        m[f"ds.dec{lv}.level.conv"] = f"{base}/conv2d"
        for b in (0, 1):
            m[f"ds.dec{lv}.level.blocks.{b}.conv1"] = f"{base}/res_block/{b}/conv2d"
            m[f"ds.dec{lv}.level.blocks.{b}.conv2"] = f"{base}/res_block/{b}/conv2d_1"
    m["ds.head.0"], m["ds.head.2"] = "SISR_DDF/conv2d", "SISR_DDF/conv2d_1"
    for i, j in enumerate((0, 2, 4)):
        m[f"us.kfeat.{j}"] = "SISR_DUF/kernel_condition/conv2d" + (f"_{i}" if i else "")
    m["us.head"] = "SISR_DUF/conv2d"
    for i in range(nb):
        m[f"us.blocks.{i}.conv1"] = f"SISR_DUF/Residual_block0_{i + 1}/conv2d"
        m[f"us.blocks.{i}.conv2"] = f"SISR_DUF/Residual_block0_{i + 1}/conv2d_1"
        if i < n_koala:
            base = f"SISR_DUF/KOALA_module/{i + 1}"
            m[f"us.blocks.{i}.mult.0"], m[f"us.blocks.{i}.mult.2"] = f"{base}/conv2d", f"{base}/conv2d_1"
            m[f"us.blocks.{i}.filt.0"], m[f"us.blocks.{i}.filt.2"] = f"{base}/conv2d_2", f"{base}/conv2d_3"
    for ours, k in (("us.filt.0", 1), ("us.filt.2", 2), ("us.rgb.0", 3), ("us.rgb.3", 4), ("us.rgb.6", 5)):
        m[ours] = f"SISR_DUF/conv2d_{k}"
    return m


D2S = ("us.rgb.0", "us.rgb.3")  # convs whose output goes through depth_to_space(2)


def to_ours(tf_state: dict, model: torch.nn.Module) -> dict:
    """TF variables ``{name: array}`` -> our state dict for ``model`` (a :class:`~bsrdata.models.koalanet.KOALAnet`);
    one BsrError line on any missing, unexpected or mis-shaped variable."""
    tf = {k[:-2] if k.endswith(":0") else k: v for k, v in tf_state.items()}
    tf = {k: v for k, v in tf.items() if not k.endswith(SKIP_SUFFIXES) and k.split("/")[-1] not in SKIP_NAMES}
    names = tf_names(len(model.us.blocks), model.us.n_koala)
    own = model.state_dict()
    out, used = {}, set()
    for ours, scope in names.items():
        for leaf, tleaf in (("weight", "kernel"), ("bias", "bias")):
            key, tkey = f"{ours}.{leaf}", f"{scope}/{tleaf}"
            if tkey not in tf:
                raise BsrError(f"koalanet: variable {tkey} (for {key}) is not in the checkpoint")
            a = torch.from_numpy(np.asarray(tf[tkey], dtype=np.float32))
            if leaf == "weight":
                if a.dim() != 4:
                    raise BsrError(f"koalanet: {tkey} has shape {tuple(a.shape)}, expected a 4-D kernel")
                a = a.permute(3, 2, 0, 1)  # HWIO -> OIHW; [h, w, out, in] -> (in, out, h, w)
            if ours in D2S:
                a = a[torch.from_numpy(d2s_perm(a.shape[0]))]
            if tuple(a.shape) != tuple(own[key].shape):
                raise BsrError(f"koalanet: {tkey} gives {key} shape {tuple(a.shape)}, needs {tuple(own[key].shape)}")
            out[key] = a.contiguous()
            used.add(tkey)
    extra = sorted(set(tf) - used)
    if extra:
        raise BsrError(f"koalanet: unexpected variable {extra[0]} in the checkpoint ({len(extra)} not mapped)")
    return out


def _is_tf_checkpoint(src: str) -> bool:
    if os.path.isdir(src):
        return any(f.endswith(".index") or ".data-" in f or f == "checkpoint" for f in os.listdir(src))
    return src.endswith(".index") or ".data-" in os.path.basename(src) or src.endswith(".meta")


def convert(src, out_dir, **options) -> dict:
    """``src``: an ``.npz`` of the official TF variables -> our ``koalanet`` checkpoint folder ``out_dir``.
    No options. A TF1 checkpoint (``.index`` / ``.data-*`` / its folder) -> one BsrError line."""
    from bsrdata.models.converters import check_out_dir, no_options, source_record, write_converted
    from bsrdata.models.registry import create_model

    no_options("koalanet", options)
    src = os.fspath(src)
    check_out_dir(out_dir)
    if not os.path.exists(src):
        raise BsrError(f"{src}: no such file")
    if _is_tf_checkpoint(src):
        raise BsrError(f"{src}: a TensorFlow 1 checkpoint cannot be read here (no TensorFlow); export its variables "
                       "to .npz with TF (docs/baselines.md, KOALAnet) and convert that file")
    if not src.endswith(".npz"):
        raise BsrError(f"{src}: expected an .npz of the official TF variables (docs/baselines.md, KOALAnet)")
    try:
        with np.load(src, allow_pickle=False) as z:
            tf_state = {k: z[k] for k in z.files}
    except Exception as exc:  # any unreadable archive is one line
        raise BsrError(f"{src}: not a readable .npz ({type(exc).__name__})") from None
    kw = {"d": 20, "ds_nf": 64, "us_nf": 64, "nb": 12, "n_koala": 5, "koala_k": 7, "up_kernel": 5,
          "placement": "official", "init_gain": 1.0, "stage": 3}
    model = create_model("koalanet", **kw)
    state = to_ours(tf_state, model)
    model.load_state_dict(state, strict=True)
    cfg = {"task": "koalanet", "model": {"name": "koalanet", **kw},
           "source": source_record(src, tf_state, "KOALAnet TF1 variables exported to .npz"),
           "adaptation": {"weights": "official release (DIV2K, bicubic x anisotropic Gaussian kernels)",
                          "window": 20, "placement": "official (window centre at HR 4i+1.5; our direct grid "
                          "samples HR 4i: expect a 1.5 px phase difference)", "range": "[-1, 1] inside the network"}}
    return write_converted(out_dir, model, cfg)
