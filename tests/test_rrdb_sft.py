"""RRDB-SFT: parameter count, shapes, variants, the SFT and prior definitions."""

import pytest
import torch

from bsrdata.models import create_model
from bsrdata.models.rrdb_sft import SFTLayer


def _count(m):
    return sum(p.numel() for p in m.parameters())


def _hand_count(nf=64, gc=32, nb=10, pc=64, hid=32, scale=4):
    conv = lambda cin, cout, k=3: cin * cout * k * k + cout  # noqa: E731
    dense = sum(conv(nf + i * gc, gc) for i in range(4)) + conv(nf + 4 * gc, nf)
    sft = 2 * (conv(nf + pc, hid) + conv(hid, nf))
    return conv(1, pc) + conv(3, nf) + nb * (sft + 3 * dense) + conv(nf, nf) + conv(nf, 3 * scale * scale)


def test_param_count_equals_the_public_network():
    m = create_model("rrdb_sft", num_classes=40)
    n = _count(m)
    assert n == 8_960_592 and _count(m.fuse) == 590_816
    # everything but the fusion GIA follows the architecture exactly
    n_gia = _count(m.fuse)
    assert n - n_gia == _hand_count() + (1 * 64 * 9 + 64)  # + the segmentation prior conv
    noseg = create_model("rrdb_sft_noseg")
    assert _count(noseg) == _hand_count()
    assert not hasattr(noseg, "fuse")


def test_forward_shapes_small_config():
    torch.manual_seed(0)
    m = create_model("rrdb_sft", num_classes=5, nf=16, nb=2, gc=8, prior_ch=16, sft_hidden=8).eval()
    lr = torch.rand(2, 3, 12, 20)
    blur = torch.rand(2, 1, 48, 80) * 5
    seg = torch.randint(0, 5, (2, 48, 80))
    seg[0, :4] = 255
    with torch.no_grad():
        out = m(lr, blur, seg)
    assert out.shape == (2, 3, 48, 80)
    assert torch.isfinite(out).all()
    # a different blur map changes the output (the prior is used)
    with torch.no_grad():
        out2 = m(lr, blur * 0, seg)
    assert (out - out2).abs().max() > 1e-6
    with pytest.raises(ValueError):
        m(lr, blur[..., :40], seg)
    with pytest.raises(ValueError):
        m(lr, blur, None)


def test_backward_trains_all_parameters():
    torch.manual_seed(1)
    m = create_model("rrdb_sft", num_classes=4, nf=8, nb=1, gc=4, prior_ch=8, sft_hidden=4, gia_groups=4)
    lr = torch.rand(2, 3, 8, 8)
    out = m(lr, torch.rand(2, 1, 32, 32), torch.randint(0, 4, (2, 32, 32)))
    out.abs().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    # GIA's zero-initialised gates (c, s) may get zero gradients but must get one
    assert not missing


def test_seg_channel_and_nearest_prior():
    seg = torch.tensor([[[0, 3], [9, 255]]])
    public = create_model("rrdb_sft_noseg", nf=8, nb=1, gc=4, prior_ch=4, sft_hidden=4, num_classes=10)
    assert torch.equal(public.seg_channel(seg, torch.float64).flatten(),
                       torch.tensor([0.0, 3.0, 9.0, 255.0], dtype=torch.float64))  # raw index, 255 at void
    m = create_model("rrdb_sft_noseg", nf=8, nb=1, gc=4, prior_ch=4, sft_hidden=4, num_classes=10,
                     seg_input="scaled")
    ch = m.seg_channel(seg)
    assert ch.shape == (1, 1, 2, 2)
    assert torch.allclose(ch.flatten(), torch.tensor([0.0, 0.3, 0.9, 1.0]))
    blur = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8)
    with torch.no_grad():
        m.prior_blur.weight.zero_()
        m.prior_blur.weight[:, 0, 1, 1] = 1.0  # identity 3x3 conv
        m.prior_blur.bias.zero_()
        p = m.prior(blur, None, (2, 2))
    assert torch.equal(p[0, 0], blur[0, 0, ::4, ::4])


def test_img_residual_starts_from_interpolation():
    import torch.nn.functional as F

    m = create_model("rrdb_sft", num_classes=3, nf=8, nb=1, gc=4, prior_ch=8, sft_hidden=4, gia_groups=4,
                     img_residual="bicubic").eval()
    with torch.no_grad():  # freshly built: the last conv is zero, the output is the interpolation
        lr = torch.rand(1, 3, 6, 7)
        out = m(lr, torch.rand(1, 1, 24, 28), torch.randint(0, 3, (1, 24, 28)))
    assert torch.allclose(out, F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False))
    assert _count(m) == _count(create_model("rrdb_sft", num_classes=3, nf=8, nb=1, gc=4, prior_ch=8, sft_hidden=4,
                                            gia_groups=4))


def test_sft_definition():
    torch.manual_seed(2)
    sft = SFTLayer(nf=4, prior_ch=3, hidden=5)
    f, p = torch.randn(1, 4, 6, 6), torch.randn(1, 3, 6, 6)
    x = torch.cat((f, p), 1)
    expected = f * torch.sigmoid(sft.scale(x)) + sft.shift(x)
    assert torch.allclose(sft(f, p), expected)


# ------------------------------------------------------------------------------ training stages 2 and 3
TINY_SR = {"nf": 8, "nb": 1, "gc": 4, "prior_ch": 8, "sft_hidden": 4, "gia_groups": 4}
TINY_TRAIN = {"iterations": 3, "batch_size": 2, "lr": 1e-3, "workers": 0, "amp": False, "log_every": 1,
              "val_groups": [1, 2], "val_limit": 2, "ckpt_every": 3, "threads": 1}


@pytest.fixture(scope="module")
def sr_data(tmp_path_factory):
    from sr_fakes import make_bench_dataset

    root = tmp_path_factory.mktemp("sr_train_ds")
    make_bench_dataset(root, n_test=5, n_train=6, h=32, w=32, num_classes=4)
    return root


def test_stage2_trains_saves_and_evaluates(sr_data, tmp_path):
    from bsrdata.models import checkpoint
    from bsrdata.models.engine.task import get_task
    from bsrdata.models.engine.trainer import train
    from bsrdata.models.rrdb_sft import RRDBSFT

    task = get_task("rrdb-sft")
    cfg = task.config({"task": "rrdb-sft", "model": {"num_classes": 4, **TINY_SR}, "data": {"crop": 16},
                       "train": TINY_TRAIN})
    res = train(task, cfg, sr_data, tmp_path / "run", progress=False)
    assert res["iterations"] == 3
    model, saved = checkpoint.load(tmp_path / "run" / "last")
    assert isinstance(model, RRDBSFT) and model.num_classes == 4
    val = res["val"]
    assert set(val) == {"1", "2", "avg"} and val["1"]["n"] == 2
    assert val["avg"]["psnr"] == pytest.approx((val["1"]["psnr"] + val["2"]["psnr"]) / 2)
    # a dataset with another class count is refused in one line
    bad = task.config({"task": "rrdb-sft", "model": {"num_classes": 7, **TINY_SR}, "data": {"crop": 16},
                       "train": TINY_TRAIN})
    from bsrdata.errors import BsrError

    with pytest.raises(BsrError, match="4 classes"):
        train(task, bad, sr_data, tmp_path / "run2", progress=False)


def test_stage3_freezes_cmos_and_trains_sr(sr_data, tmp_path):
    from bsrdata.models import checkpoint, create_model
    from bsrdata.models.engine.task import get_task
    from bsrdata.models.engine.trainer import train

    torch.manual_seed(0)
    cmos = create_model("cmos", num_classes=4, window=(4, 4))  # small GIA windows keep the test fast
    checkpoint.save(tmp_path / "cmos", cmos, {"model": {"name": "cmos", "num_classes": 4, "window": [4, 4]}})
    sr = create_model("rrdb_sft", num_classes=4, **TINY_SR)
    checkpoint.save(tmp_path / "sr", sr, {"model": {"name": "rrdb_sft", "num_classes": 4, **TINY_SR}})
    task = get_task("blind")
    cfg = task.config({"task": "blind", "init": {"cmos_ckpt": str(tmp_path / "cmos"), "sr_ckpt": str(tmp_path / "sr")},
                       "data": {"crop": 16, "zoom": [1], "val_split": ""},
                       "train": {**TINY_TRAIN, "iterations": 2, "ckpt_every": 2}})
    # task.config looks only at the dict; resolve reads the stage-1/2 checkpoints' config.json
    assert cfg["model"]["num_classes"] == 0 and cfg["model"]["sr_kw"] == {}
    cfg = task.resolve(cfg)
    assert cfg["model"]["num_classes"] == 4 and cfg["model"]["sr_kw"]["nf"] == 8
    train(task, cfg, sr_data, tmp_path / "blind", progress=False)
    chain, _ = checkpoint.load(tmp_path / "blind" / "last")
    # CMOS weights and BN statistics unchanged, SR weights changed
    got_cmos, got_sr = chain.cmos.state_dict(), chain.sr.state_dict()
    for k, v in cmos.state_dict().items():
        assert torch.equal(got_cmos[k], v), k
    assert any(not torch.equal(got_sr[k], v) for k, v in sr.state_dict().items())
    chain.train()
    assert not chain.cmos.training and chain.sr.training
    assert all(not p.requires_grad for p in chain.cmos.parameters())


@pytest.mark.parametrize("tr", [False, True])
@pytest.mark.parametrize("hf", [False, True])
@pytest.mark.parametrize("vf", [False, True])
def test_dihedral_keeps_direct_grid_registered(tr, hf, vf):
    from bsrdata.dataset import dihedral

    torch.manual_seed(3)
    hr = torch.rand(2, 3, 16, 20)
    blur = torch.rand(2, 1, 16, 20)
    batch = {"hr": hr, "lr": hr[..., ::4, ::4], "blur": blur, "seg": torch.randint(0, 5, (2, 16, 20))}
    out, mask = dihedral(batch, tr, hf, vf, 4, True)
    # LR pixel (i, j) is again HR pixel (4i, 4j), for the image and the maps
    assert torch.equal(out["lr"], out["hr"][..., ::4, ::4])
    assert out["blur"].shape[-2:] == out["hr"].shape[-2:] == mask.shape[-2:]
    if hf or vf:
        assert mask.sum() < mask.numel()
        # the naive flip (what a centred downsampler needs) breaks the direct grid
        naive, _ = dihedral(batch, tr, hf, vf, 4, False)
        assert not torch.equal(naive["lr"], naive["hr"][..., ::4, ::4])
    else:
        assert bool(mask.all())
    # the valid region of the target is a true flip/transpose of the original pixels
    ref = hr.transpose(-2, -1) if tr else hr
    if hf:
        ref = ref.flip(-1)[..., 3:]
    if vf:
        ref = ref.flip(-2)[..., 3:, :]
    assert torch.equal(out["hr"][..., : ref.shape[-2], : ref.shape[-1]], ref)
