"""Every registered model, timm style: build tiny, forward shapes, gradients reach every parameter,
checkpoint round trip; plus the model registry and the shared weights loader (bsrdata.models.weights).

Each shipped model needs an entry in ``TINY`` (small constructor arguments and inputs); a model registered by
a bsrdata module without one fails ``test_model_has_tiny_config``. Names registered by test helpers
(``tests/engine_fakes.py``) are skipped.
"""

import pytest
import torch
import torch.nn as nn

from bsrdata.errors import BsrError
from bsrdata.models import checkpoint, create_model, list_models, register_model
from bsrdata.models.registry import MODELS
from bsrdata.models.weights import LoadReport, load_state, read_weights

CMOS_KW = {"num_classes": 3, "width": 0.25, "window": [3, 4]}
SR_KW = {"nf": 8, "nb": 1, "gc": 4, "prior_ch": 8, "sft_hidden": 4, "gia_groups": 2, "gia_window": [4, 4]}


def _lr(n=2, h=8, w=8):
    return torch.rand(n, 3, h, w)


# name -> (constructor kwargs (JSON-able: they go to config.json), inputs() -> args, forward kwargs,
#          expected output: {key: shape} for dict outputs, [shapes] for list outputs, a shape otherwise)
TINY = {
    "hrnet_w18_small_v2": ({}, lambda: (_lr(2, 16, 16),), {},
                           [(2, 18, 16, 16), (2, 36, 8, 8), (2, 72, 4, 4), (2, 144, 2, 2)]),
    "cmos": (CMOS_KW, lambda: (_lr(2, 16, 16),), {},
             {"blur": (2, 1, 64, 64), "seg": (2, 3, 64, 64), "aux_blur": (2, 1, 64, 64), "aux_seg": (2, 3, 64, 64)}),
    "cmos_blur": (CMOS_KW, lambda: (_lr(2, 16, 16),), {}, {"blur": (2, 1, 64, 64), "aux_blur": (2, 1, 64, 64)}),
    "cmos_seg": (CMOS_KW, lambda: (_lr(2, 16, 16),), {}, {"seg": (2, 3, 64, 64), "aux_seg": (2, 3, 64, 64)}),
    "rrdb_sft": ({"num_classes": 3, **SR_KW},
                 lambda: (_lr(), torch.rand(2, 1, 32, 32) * 3, torch.randint(0, 3, (2, 32, 32))), {}, (2, 3, 32, 32)),
    "rrdb_sft_noseg": ({"num_classes": 3, **SR_KW}, lambda: (_lr(), torch.rand(2, 1, 32, 32) * 3), {}, (2, 3, 32, 32)),
    "blind_sr": ({"num_classes": 3, "cmos_kw": {k: v for k, v in CMOS_KW.items() if k != "num_classes"},
                  "sr_kw": SR_KW}, lambda: (_lr(),), {},
                 {"sr": (2, 3, 32, 32), "blur": (2, 1, 32, 32), "seg": (2, 3, 32, 32)}),
    # CREStereo's widths are fixed by the public checkpoint; inputs must be multiples of 16. return_all: the
    # training loss is over every iteration's prediction -- the last one alone gives no gradient to the
    # 1/16 and 1/8 levels (conv_offset_16/8, self_att_fn, cross_att_fn), whose flow is detached between levels.
    "crestereo": ({}, lambda: (torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 32, 32) * 255),
                  {"iters": 2, "return_all": True}, [(1, 2, 32, 32)] * 4),
    # ---------------------------------------------------------------- baselines (docs/baselines.md)
    # MANet rows (tests/test_manet.py has the numerics)
    "manet_estimator": ({"kernel_size": 5, "est_nf": 16}, lambda: (_lr(2, 8, 6),), {}, (2, 25, 8, 6)),
    "manet_rrdb_sft": ({"nf": 8, "nb": 1, "gc": 4, "code_length": 3, "kernel_size": 5, "pca_sigma_max": 2.0},
                       lambda: (_lr(), torch.rand(2, 3, 8, 8)), {}, (2, 3, 32, 32)),
    "manet": ({"kernel_size": 5, "est_nf": 16, "nf": 8, "nb": 1, "gc": 4, "code_length": 3, "pca_sigma_max": 2.0},
              lambda: (_lr(),), {}, {"sr": (2, 3, 32, 32), "kernel": (2, 25, 8, 8)}),

    # DAN rows (tests/test_dan.py)
    "dan_v1": ({"nf": 8, "nb": 2, "est_nf": 8, "est_blocks": 1, "kernel_size": 7, "code_len": 4, "loops": 2,
                "pca_sigma_max": 2.0},
               lambda: (_lr(2, 8, 8),), {},
               {"sr": (2, 3, 32, 32), "code": (2, 4), "sr_all": (2, 2, 3, 32, 32), "code_all": (2, 2, 4)}),
    "dan_v2": ({"nf": 8, "nb": 2, "ng": 2, "est_nf": 8, "est_blocks": 1, "kernel_size": 7, "code_len": 4,
                "loops": 2, "pca_sigma_max": 2.0},
               lambda: (_lr(2, 8, 8),), {},
               {"sr": (2, 3, 32, 32), "code": (2, 4), "sr_all": (2, 2, 3, 32, 32), "code_all": (2, 2, 4),
                "kernel": (2, 7, 7), "kernel_all": (2, 2, 7, 7)}),

    # DCLS rows (tests/test_dcls.py)
    "dcls": ({"nf": 16, "nb": 1, "ng": 2, "reduction": 2, "res_blocks": 1, "est_blocks": 1, "latent": 8,
              "kernel_size": 11, "kernel_hidden": 4}, lambda: (_lr(2, 8, 8),), {},
             {"sr": (2, 3, 32, 32), "kernel": (2, 1, 11, 11)}),

    # KOALAnet rows (tests/test_koalanet.py)
    "koalanet_ds": ({"d": 9, "ds_nf": 4, "placement": "centred"}, lambda: (_lr(2, 8, 8),), {}, (2, 81, 8, 8)),
    "koalanet_us": ({"us_nf": 8, "nb": 2}, lambda: (_lr(),), {}, (2, 3, 32, 32)),
    "koalanet": ({"d": 9, "ds_nf": 4, "us_nf": 8, "nb": 2, "n_koala": 1, "placement": "centred"}, lambda: (_lr(),), {},
                 {"sr": (2, 3, 32, 32), "kernels": (2, 81, 8, 8)}),

    # KernelGAN / ZSSR rows (tests/test_kernelgan.py)
    "kernelgan_g": ({"width": 4}, lambda: (torch.rand(2, 3, 20, 20) * 2 - 1,), {}, (2, 3, 4, 4)),
    "kernelgan_d": ({"width": 4, "blocks": 2}, lambda: (torch.rand(2, 3, 12, 12) * 2 - 1,), {}, (2, 1, 6, 6)),
    "zssr": ({"width": 4, "depth": 3}, lambda: (torch.rand(1, 3, 8, 8),), {}, (1, 3, 8, 8)),

}

# Parameters that get no gradient by design: name prefix -> reason.
NO_GRAD = {
    "blind_sr": {"cmos.": "freeze_cmos=True (stage 3 trains the SR network on a fixed, pretrained CMOS)"},
    "manet": {"estimator.": "freeze_estimator=True (MANet stage 3 fine-tunes the restorer on the frozen stage-1 "
                            "estimator, run under no_grad as the official code)"},
}
# Models whose gradients are only checked to exist (not to be non-zero), with the reason.
GRAD_MAY_BE_ZERO = {
    "blind_sr": "the SR inputs are the frozen untrained CMOS's estimates (nearly constant maps, one class), which "
                "the GIA BatchNorms can cancel; rrdb_sft checks the same SR network with varied inputs",
}


# Parameters whose gradient may be exactly zero in a tiny network: the GIA channel MLPs end in a ReLU (as the
# public code), which can be off for every channel of a 2-5 channel GIA; tests/test_gia.py checks the branch.
DEAD_RELU_OK = ".channel.mlp"


def _is_test_helper(name):
    return not getattr(MODELS.get(name), "__module__", "").startswith("bsrdata.")


# the product's models; names that a test module registered for its own fakes are not listed
MODEL_NAMES = [n for n in list_models() if not _is_test_helper(n)]


def _tensors(out):
    """The floating-point output tensors of a dict / list / tensor output."""
    vals = out.values() if isinstance(out, dict) else (out if isinstance(out, (list, tuple)) else [out])
    return [v for v in vals if v is not None and v.is_floating_point()]


def _shapes(out):
    if isinstance(out, dict):
        return {k: tuple(v.shape) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return [tuple(v.shape) for v in out]
    return tuple(out.shape)


def _build(name, seed=0):
    if name not in TINY:
        pytest.fail(f"model {name!r} has no tiny configuration in tests/test_models.py TINY")
    kw, inputs, fwd, expected = TINY[name]
    torch.manual_seed(seed)
    return create_model(name, **kw), inputs(), fwd, expected


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_has_tiny_config(name):
    assert name in TINY or _is_test_helper(name)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shapes(name):
    model, x, fwd, expected = _build(name)
    with torch.no_grad():
        out = model.eval()(*x, **fwd)
    assert _shapes(out) == (expected if not isinstance(expected, list) else [tuple(s) for s in expected])
    assert all(torch.isfinite(t).all() for t in _tensors(out))
    if name == "blind_sr":
        assert out["seg"].is_floating_point()  # the CMOS logits; the SR network gets their argmax


def _backward(model, x, fwd):
    model.train()
    for p in model.parameters():
        p.grad = None
    loss = sum(t.float().square().mean() for t in _tensors(model(*x, **fwd)))
    loss.backward()


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_parameter_gets_a_gradient(name):
    model, x, fwd, _ = _build(name)
    frozen = NO_GRAD.get(name, {})
    # 1) at initialisation: every trainable parameter is connected to the loss
    _backward(model, x, fwd)
    for n, p in model.named_parameters():
        by_design = any(n.startswith(prefix) for prefix in frozen)
        if by_design:
            assert not p.requires_grad and p.grad is None, n
        else:
            assert p.requires_grad and p.grad is not None, f"{name}: {n} gets no gradient"
    # 2) zero-initialised gates (the GIA's scalar c, s) block the gradient of the
    #    layers before them at initialisation, so jitter the weights and require non-zero gradients
    if name in GRAD_MAY_BE_ZERO:
        return
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    _backward(model, x, fwd)
    zero = [n for n, p in model.named_parameters() if p.requires_grad and not p.grad.abs().sum() > 0
            and DEAD_RELU_OK not in n]
    assert zero == [], f"{name}: zero gradient for {zero[:5]} ({len(zero)})"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_round_trip(name, tmp_path):
    model, x, fwd, _ = _build(name)
    kw = TINY[name][0]
    model.eval()
    for mod in model.modules():  # non-trivial BatchNorm statistics must survive the round trip too
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    checkpoint.save(tmp_path / "ck", model, {"model": {"name": name, **kw}})
    model2, cfg = checkpoint.load(tmp_path / "ck")
    assert cfg["model"]["name"] == name and not model2.training
    with torch.no_grad():
        a, b = _tensors(model(*x, **fwd)), _tensors(model2(*x, **fwd))
    assert len(a) == len(b) > 0 and all(torch.equal(u, v) for u, v in zip(a, b))


# ------------------------------------------------------------------------------------------ registry

@pytest.fixture
def scratch_name():
    name = "tiny_registry_test_model"
    yield name
    MODELS._objects.pop(name, None)  # keep the process-wide registry as it was


def test_bare_register_model_is_creatable_and_listed(scratch_name):
    @register_model(scratch_name)
    def tiny(width=2):
        return nn.Conv2d(1, width, 1)

    assert scratch_name in list_models()
    assert create_model(scratch_name, width=3).out_channels == 3
    with pytest.raises(BsrError, match="registered twice"):
        register_model(scratch_name)(lambda: nn.Identity())


def test_declared_names_are_listed_and_cannot_be_taken():
    for name in ("hrnet_w18_small_v2", "cmos", "cmos_blur", "cmos_seg", "rrdb_sft", "rrdb_sft_noseg",
                 "blind_sr", "crestereo"):
        assert name in list_models()
    with pytest.raises(BsrError, match="declared in bsrdata.models.cmos"):
        register_model("cmos")(lambda: nn.Identity())


def test_unknown_model_is_one_line():
    with pytest.raises(BsrError) as err:
        create_model("nope_model")
    msg = str(err.value)
    assert msg.startswith("unknown model 'nope_model' (known: ") and "cmos_blur" in msg and "\n" not in msg


# ------------------------------------------------------------------------------------- weights loader

class _Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)
        self.b = nn.Linear(3, 1)


def test_load_state_strict_report_is_one_line():
    m = _Two()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd.pop("a.bias")
    sd["b.weight"] = torch.zeros(2, 2)
    sd["c.weight"] = torch.zeros(1)
    with pytest.raises(BsrError) as err:
        load_state(m, sd, source="w.pth", target="Two")
    msg = str(err.value)
    assert msg.startswith("w.pth: weights do not fit Two: ") and "\n" not in msg
    assert "1 missing keys: a.bias" in msg and "1 unexpected keys: c.weight" in msg
    assert "1 shape mismatches: b.weight (2, 2)!=(1, 3)" in msg


def test_load_state_non_strict_copies_what_fits_and_key_map():
    src, dst = _Two(), _Two()
    sd = {"net." + k: v for k, v in src.state_dict().items() if k != "b.bias"}
    rep = load_state(dst, sd, source="w", strict=False, key_map=lambda k: k[4:] if k.startswith("net.") else None)
    assert isinstance(rep, LoadReport) and not rep.ok
    assert sorted(rep.loaded) == ["a.bias", "a.weight", "b.weight"] and rep.missing == ["b.bias"]
    assert torch.equal(dst.a.weight, src.a.weight)
    rep = load_state(dst, {"x": src.b.bias}, source="w", strict=False, key_map={"x": "b.bias"})
    assert rep.loaded == ["b.bias"] and torch.equal(dst.b.bias, src.b.bias)


def test_read_weights_safetensors_and_torch_files(tmp_path):
    from safetensors.torch import save_file

    m = _Two()
    save_file(dict(m.state_dict()), str(tmp_path / "w.safetensors"))
    torch.save({"model": {"module." + k: v for k, v in m.state_dict().items()}}, tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        sd = read_weights(tmp_path / f)
        assert sorted(sd) == sorted(m.state_dict()) and torch.equal(sd["a.weight"], m.a.weight)
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(BsrError, match="bad.safetensors: cannot read weights: not a readable safetensors file"):
        read_weights(tmp_path / "bad.safetensors")
    with pytest.raises(BsrError, match="not found"):
        read_weights(tmp_path / "absent.pth")


def test_the_parametrised_list_covers_every_shipped_model():
    shipped = {"hrnet_w18_small_v2", "cmos", "cmos_blur", "cmos_seg", "rrdb_sft", "rrdb_sft_noseg", "blind_sr",
               "crestereo"}
    assert shipped <= set(MODEL_NAMES) and not any(_is_test_helper(n) for n in MODEL_NAMES)
