"""Torch methods of the harness (oracle, cmos) and ``bsr sr`` on real-photo-like inputs."""

import numpy as np
import pytest
import torch
from PIL import Image
from sr_fakes import make_bench_dataset

import bsrdata.models.bench_methods  # noqa: F401  (registers oracle, cmos+rrdb_sft)
from bsrdata import benchmark as bm
from bsrdata.cli.main import main
from bsrdata.metrics import psnr_y, to_uint8

TINY_SR = {"nf": 8, "nb": 1, "gc": 4, "prior_ch": 8, "sft_hidden": 4, "gia_groups": 4}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from bsrdata.models import checkpoint, create_model

    d = tmp_path_factory.mktemp("sr_ckpts")
    torch.manual_seed(0)
    cmos = create_model("cmos", num_classes=4, window=(4, 4))
    checkpoint.save(d / "cmos", cmos, {"model": {"name": "cmos", "num_classes": 4, "window": [4, 4]}})
    sr = create_model("rrdb_sft", num_classes=4, **TINY_SR)
    checkpoint.save(d / "sr", sr, {"model": {"name": "rrdb_sft", "num_classes": 4, **TINY_SR}})
    chain = create_model("blind_sr", num_classes=4, cmos=cmos, sr=sr)
    checkpoint.save(d / "blind", chain, {"model": {"name": "blind_sr", "num_classes": 4, "cmos": "cmos",
                                                   "cmos_kw": {"window": [4, 4]}, "sr": "rrdb_sft",
                                                   "sr_kw": TINY_SR}})
    sr5 = create_model("rrdb_sft", num_classes=5, **TINY_SR)
    checkpoint.save(d / "sr5", sr5, {"model": {"name": "rrdb_sft", "num_classes": 5, **TINY_SR}})
    return d, sr, chain


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr_cli_ds")
    make_bench_dataset(root, n_test=5, h=32, w=32, num_classes=4)
    return root


def test_oracle_uses_true_maps(dataset, ckpts, tmp_path):
    d, sr, _ = ckpts
    data = bm.BenchData(dataset, "1")
    m = bm.get_method("oracle", ckpt=str(d / "sr"), device="cpu")
    res = bm.run_bench(data, [m], tmp_path)
    assert not res.errors
    uid = data.groups[1][0]
    s = data.load(uid)
    with torch.no_grad():
        y = sr.eval()(torch.from_numpy(s["lr"] / 255.0).float().permute(2, 0, 1)[None],
                      torch.from_numpy(s["blur"])[None, None], torch.from_numpy(s["seg"].astype(np.int64))[None])
    expected = psnr_y(to_uint8(y[0].permute(1, 2, 0).numpy()), s["hr"])
    import json

    slug = res.rows[0]["slug"]
    recs = [json.loads(x) for x in (tmp_path / "results" / f"{slug}.jsonl").read_text().splitlines()[1:]]
    assert {r["uid"]: r for r in recs}[uid]["psnr"] == pytest.approx(expected, abs=1e-6)
    prov = res.rows[0]["provenance"]
    assert len(prov["checkpoint_sha256"]["sr"]) == 64


def test_cmos_method_blind_ckpt_equals_parts(dataset, ckpts, tmp_path):
    d, _, _ = ckpts
    data = bm.BenchData(dataset, "2")
    a = bm.run_bench(data, [bm.get_method("cmos", ckpt=str(d / "blind"), device="cpu")], tmp_path / "a")
    b = bm.run_bench(data, [bm.get_method("cmos", ckpt=str(d / "sr"), cmos_ckpt=str(d / "cmos"), device="cpu")],
                     tmp_path / "b")
    assert not a.errors and not b.errors
    assert a.rows[0]["avg"]["psnr"] == pytest.approx(b.rows[0]["avg"]["psnr"], abs=1e-9)


def test_mismatched_checkpoints_are_one_line_errors(dataset, ckpts, tmp_path):
    d, _, _ = ckpts
    data = bm.BenchData(dataset, "1")
    cases = [
        (bm.get_method("oracle", ckpt=str(d / "cmos"), device="cpu"), "is a CMOS checkpoint, oracle needs RRDBSFT"),
        (bm.get_method("oracle", ckpt=str(d / "sr5"), device="cpu"), "5 classes, the dataset has 4"),
        (bm.get_method("cmos", ckpt=str(d / "sr"), device="cpu"), "needs BlindSR"),
        (bm.get_method("cmos", ckpt=str(d / "sr5"), cmos_ckpt=str(d / "cmos"), device="cpu"), "4 classes"),
    ]
    res = bm.run_bench(data, [c[0] for c in cases] + [bm.get_method("bicubic")], tmp_path)
    assert len(res.errors) == len(cases)
    for err, (_, msg) in zip(res.errors, cases):
        assert msg in err and "\n" not in err
    assert [r["label"] for r in res.rows] == ["bicubic"]


def test_bsr_sr_writes_three_pngs(ckpts, tmp_path, capsys):
    d, _, chain = ckpts
    rng = np.random.default_rng(0)
    photo = (rng.random((20, 28, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=95)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["sr", str(tmp_path / "photo.jpg"), "--ckpt", str(d / "blind"), "--out", str(out), "--device", "cpu"])
    assert exc.value.code == 0, capsys.readouterr().err
    sr = np.asarray(Image.open(out / "photo_sr.png"))
    assert sr.shape == (80, 112, 3)
    # the SR image is the chain's output on the decoded photo
    lr = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))
    with torch.no_grad():
        y = chain.eval()(torch.from_numpy(lr / 255.0).float().permute(2, 0, 1)[None])
    np.testing.assert_array_equal(sr, to_uint8(y["sr"][0].permute(1, 2, 0).numpy()))
    blur = Image.open(out / "photo_blur.png")
    assert blur.mode == "RGB" and blur.size == (112, 80)  # pixel aligned with the SR image
    legend = Image.open(out / "photo_blur_legend.png")
    assert legend.size[1] == 80 and legend.size[0] < 112
    raw = np.asarray(Image.open(out / "photo_sigma.png"))
    assert raw.dtype == np.uint16 and raw.shape == (80, 112)
    sigma = y["blur"][0, 0].numpy()
    np.testing.assert_array_equal(raw, np.clip(np.round(sigma * 1000.0), 0, 65535).astype(np.uint16))
    err = capsys.readouterr().err
    warn = float(sigma.max()) > 1.5 * 5.0
    assert ("far beyond --sigma-max" in err) == warn, (err, float(sigma.max()))
    seg = Image.open(out / "photo_seg.png")
    assert seg.mode == "P" and seg.size == (112, 80)
    np.testing.assert_array_equal(np.asarray(seg), y["seg"][0].argmax(0).numpy() + 1)  # the chain returns logits
    assert not list(out.glob("*.tmp*"))


def test_sigma_out_of_training_range_warns():
    from bsrdata.cli.sr import sigma_warning

    s = np.full((4, 4), 3.0)
    assert sigma_warning("p.png", s, 5.0) is None
    s[0, 0] = 246.0
    assert sigma_warning("p.png", s, 5.0) == ("p.png: estimated σ up to 246 px, far beyond --sigma-max 5 (the "
                                              "checkpoint's training range): the SR extrapolates")
    s[0, 0] = np.nan
    assert "up to nan px" in sigma_warning("p.png", s, 5.0)


def test_bsr_sr_bad_inputs(ckpts, tmp_path, capsys):
    d, _, _ = ckpts
    (tmp_path / "notimg.png").write_bytes(b"hello")
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "one.png")
    for argv, msg in [
        (["sr", str(tmp_path / "missing.png"), "--ckpt", str(d / "blind"), "--out", str(tmp_path / "o")],
         "no such file"),
        (["sr", str(tmp_path / "notimg.png"), "--ckpt", str(d / "blind"), "--out", str(tmp_path / "o"),
          "--device", "cpu"], "not a readable image"),
        (["sr", str(tmp_path / "one.png"), "--ckpt", str(d / "blind"), "--out", str(tmp_path / "o"),
          "--device", "cpu"], "1x1 image is too small"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 1 and msg in err and "Traceback" not in err
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(SystemExit) as exc:
        main(["sr", str(tmp_path / "ok.png"), "--ckpt", str(d / "sr"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "needs BlindSR" in err


def test_blur_colour_bar_and_palette():
    from bsrdata.preview import blur_colour, seg_image, voc_palette

    sigma = np.zeros((100, 50))
    sigma[:, 25:] = 5.0
    img = blur_colour(sigma, 5.0, bar_width=40)
    assert img.shape == (100, 90, 3)
    assert not np.array_equal(img[50, 10], img[50, 40])  # 0 and sigma_max get different colours
    bar = img[:, 50:]
    assert (bar < 128).any() and (bar == 255).any()  # ticks/labels drawn on white
    pal = voc_palette()
    assert pal.shape == (256, 3) and len({tuple(c) for c in pal[:21]}) == 21
    im = seg_image(np.array([[0, 1], [255, 2]], np.uint8))
    assert np.asarray(im).tolist() == [[1, 2], [0, 3]]


def test_engine_validation_scores_like_the_bench_oracle(dataset, ckpts, tmp_path):
    """The engine's SR validation and `bsr bench --method oracle` come from the same loop: equal numbers."""
    from bsrdata.models.engine.task import get_task

    d, sr, _ = ckpts
    task = get_task("rrdb-sft")
    cfg = {"eval": {"crop_border": 2}}
    val = task.evaluate(sr, str(dataset), cfg, [1, 2])
    data = bm.BenchData(dataset, [1, 2])
    res = bm.run_bench(data, [bm.get_method("oracle", ckpt=str(d / "sr"), device="cpu")], tmp_path, crop_border=2)
    row = res.rows[0]
    for g in ("1", "2"):
        assert val[g]["psnr"] == row["groups"][g]["psnr"] and val[g]["ssim"] == row["groups"][g]["ssim"]
        assert val[g]["n"] == row["groups"][g]["n"]
    assert val["avg"]["psnr"] == row["avg"]["psnr"] and val["avg"]["n"] == len(data.units)
    # limit keeps the first images of each group; a whole split is scored under its name
    lim = task.evaluate(sr, str(dataset), cfg, [1], limit=2)
    assert lim["1"]["n"] == 2
    whole = task.evaluate(sr, str(dataset), cfg, None, split="test", limit=3)
    assert set(whole) == {"test", "avg"} and whole["test"]["n"] == 3 and whole["avg"] == whole["test"]
    split = bm.BenchData(dataset, split="test")
    first = split.groups["test"][:3]
    sr.eval()  # the module-scoped fixture's model may still be in training mode when this test runs first
    ref = [psnr_y(task.super_resolve(sr, split.load(u), torch.device("cpu")), split.load(u)["hr"], 2) for u in first]
    assert whole["test"]["psnr"] == pytest.approx(float(np.mean(ref)), abs=1e-12)


def test_chain_name_alias_and_help(dataset, ckpts, tmp_path, capsys):
    d, _, _ = ckpts
    a = bm.get_method("cmos", ckpt=str(d / "blind"), device="cpu")
    b = bm.get_method("cmos+rrdb_sft", ckpt=str(d / "blind"), device="cpu")
    assert a.label == b.label == "cmos+rrdb_sft" and a.identity() == b.identity()
    assert bm.split_label("chain=cmos") == ("chain", "cmos")
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "oracle" in out and "cmos+rrdb_sft" in out and "alias cmos" in out


def test_resolve_dir_and_conversions(ckpts, tmp_path):
    from bsrdata.errors import BsrError
    from bsrdata.models.checkpoint import resolve_dir
    from bsrdata.models.convert import image_to_tensor, tensor_to_image

    d, _, _ = ckpts
    assert resolve_dir(d / "sr") == str(d / "sr")
    assert resolve_dir(d / "sr" / "model.safetensors") == str(d / "sr")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last").symlink_to(d / "sr")
    assert resolve_dir(run) == str(run / "last")
    with pytest.raises(BsrError, match="no such checkpoint"):
        resolve_dir(tmp_path / "missing")
    with pytest.raises(BsrError, match="neither a checkpoint folder nor a run folder"):
        resolve_dir(tmp_path)
    img = (np.arange(2 * 3 * 3) * 14 % 256).astype(np.uint8).reshape(2, 3, 3)
    t = image_to_tensor(img)
    assert t.shape == (1, 3, 2, 3) and t.dtype == torch.float32 and float(t.max()) <= 1.0
    np.testing.assert_array_equal(tensor_to_image(t), img)
