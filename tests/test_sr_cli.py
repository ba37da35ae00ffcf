"""Torch methods of the harness (oracle, cmos) and ``bsr sr`` on real-photo-like inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

import bsrdata.models.bench_methods  # noqa: F401  (registers oracle, cmos+rrdb_sft)
from bsrdata import benchmark as bm
from bsrdata.metrics import psnr_y, to_uint8
from bsrdata.cli.main import main
from sr_fakes import make_bench_dataset

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
    assert blur.mode == "RGB" and blur.size[1] == 80 and blur.size[0] > 112  # map + colour bar
    seg = Image.open(out / "photo_seg.png")
    assert seg.mode == "P" and seg.size == (112, 80)
    np.testing.assert_array_equal(np.asarray(seg), y["seg"][0].numpy() + 1)
    assert not list(out.glob("*.tmp*"))


def test_bsr_sr_bad_inputs(ckpts, tmp_path, capsys):
    d, _, _ = ckpts
    (tmp_path / "notimg.png").write_bytes(b"hello")
    for argv, msg in [
        (["sr", str(tmp_path / "missing.png"), "--ckpt", str(d / "blind"), "--out", str(tmp_path / "o")], "no such file"),
        (["sr", str(tmp_path / "notimg.png"), "--ckpt", str(d / "blind"), "--out", str(tmp_path / "o"),
          "--device", "cpu"], "not a readable image"),
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
