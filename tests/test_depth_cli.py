"""``bsr depth cityscapes``: a tiny fake Cityscapes tree, random / crafted CREStereo weights saved with
torch.save, --size 64x96 and --iters 2 so each pair takes a fraction of a second on the CPU."""

import os

import cv2
import numpy as np
import pytest
import torch

from bsrdata import stereo
from bsrdata.cli.main import main
from bsrdata.models import crestereo as cs

try:
    from tests import fakes
except ImportError:  # tests/ is not a package; pytest puts it on sys.path
    import fakes

COUNTS = {"train": 2, "val": 1}
H, W = 40, 72


def run(*args):
    with pytest.raises(SystemExit) as exc:
        main(["depth", "cityscapes", *map(str, args)])
    return exc.value.code


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("cs")
    truth = fakes.make_cityscapes(root / "cityscapes", counts=COUNTS, h=H, w=W)
    torch.manual_seed(11)
    torch.save(cs.CREStereo().state_dict(), root / "random.pth")
    # crafted: every update adds delta = (-0.1, 0) and upsampling copies the centre, so the two-pass
    # result at 64x96 with 2 iterations is -40 * delta = 4.0 px, i.e. 3.0 px at the 72 px wide original
    m = cs.CREStereo()
    with torch.no_grad():
        m.update_block.flow_head.conv2.weight.zero_()
        m.update_block.flow_head.conv2.bias.copy_(torch.tensor([-0.1, 0.0]))
        m.update_block.mask[2].weight.zero_()
        m.update_block.mask[2].bias.zero_()
        m.update_block.mask[2].bias[64:80] = 200.0
    torch.save({"state_dict": m.state_dict()}, root / "constant.pth")
    return {"root": root / "cityscapes", "truth": truth, "random": root / "random.pth",
            "constant": root / "constant.pth", "base": root}


def common(tree, out, weights="random", *extra):
    return ("--root", tree["root"], "--weights", tree[weights], "--out", out, "--device", "cpu",
            "--size", "64x96", "--iters", "2", *extra)


def cache_file(out, truth, key):
    return stereo.cache_disparity_path(out, truth[key]["split"], key)


def test_writes_cache_the_builder_reads(tree, tmp_path, capsys):
    out = tmp_path / "cache"
    assert run(*common(tree, out, "constant")) == 0
    err = capsys.readouterr().err
    assert "slow" in err and "--device cuda" in err
    for key, t in tree["truth"].items():
        png = cv2.imread(cache_file(out, tree["truth"], key), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint16 and png.shape == (H, W)
        assert (png == round(3.0 * 256) + 1).all()
    # the builder's reader takes it: depth = baseline * fx / 3 px
    from bsrdata.sources.cityscapes import CityscapesSource

    src = CityscapesSource(tree["root"], disparity=f"cache:{out}", splits=tuple(COUNTS))
    key = sorted(tree["truth"])[0]
    rec = src.load(key)
    t = tree["truth"][key]
    np.testing.assert_allclose(rec.depth, t["baseline"] * t["fx"] / 3.0, rtol=1e-5)


def test_cache_equals_direct_inference_on_bgr(tree, tmp_path):
    out = tmp_path / "cache"
    assert run(*common(tree, out)) == 0
    model = cs.load_crestereo(tree["random"])
    key = sorted(tree["truth"])[-1]
    t = tree["truth"][key]
    left = cv2.imread(t["paths"]["leftImg8bit"], cv2.IMREAD_COLOR)  # OpenCV reads BGR
    right = cv2.imread(t["paths"]["rightImg8bit"], cv2.IMREAD_COLOR)
    disp = cs.predict_disparity(model, left, right, size=(64, 96), iters=2)
    png = cv2.imread(cache_file(out, tree["truth"], key), cv2.IMREAD_UNCHANGED)
    pos = disp > 1.0 / 256
    assert pos.any() or (png == 0).all()
    np.testing.assert_allclose((png[pos].astype(np.float64) - 1) / 256, disp[pos], atol=1 / 512 + 1e-4)
    assert (png[disp <= 0] == 0).all()


def test_resumes_and_never_trusts_partial_files(tree, tmp_path, capsys):
    out = tmp_path / "cache"
    keys = sorted(tree["truth"], key=lambda k: (list(COUNTS).index(tree["truth"][k]["split"]), k))
    assert run(*common(tree, out, "constant", "--limit", "1")) == 0
    files = [cache_file(out, tree["truth"], k) for k in keys]
    assert [os.path.isfile(f) for f in files] == [True, False, False]
    capsys.readouterr()
    assert run(*common(tree, out, "constant")) == 0
    assert "1 of 3 pairs already cached" in capsys.readouterr().err
    assert all(os.path.isfile(f) for f in files)
    # a killed run leaves a temp file; a damaged final file must not be trusted either
    with open(files[1] + ".tmp4242", "wb") as fh:
        fh.write(b"half a png")
    os.unlink(files[1])
    with open(files[2], "wb") as fh:
        fh.write(b"\x89PNG garbage")
    mtime0 = os.path.getmtime(files[0])
    assert run(*common(tree, out, "constant")) == 0
    assert "wrote 2 disparities, 1 already cached" in capsys.readouterr().out
    assert os.path.getmtime(files[0]) == mtime0
    assert not os.path.exists(files[1] + ".tmp4242")
    for f in files:
        assert (cv2.imread(f, cv2.IMREAD_UNCHANGED) == 769).all()
    # other settings on the same cache are refused
    assert run(*common(tree, out, "constant")[:-1], "3") == 1
    assert "other settings" in capsys.readouterr().err


def _one_error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bsr: error:")]
    assert len(err) == 1
    return err[0]


def test_bad_weights(tree, tmp_path, capsys):
    assert run("--root", tree["root"], "--weights", tmp_path / "none.pth", "--out", tmp_path / "c") == 1
    assert "weights file not found" in _one_error_line(capsys)
    sd = cs.CREStereo().state_dict()
    sd.pop("conv_offset_16.weight")
    torch.save(sd, tmp_path / "wrong.pth")
    assert run(*common(tree, tmp_path / "c", "random")[:3], tmp_path / "wrong.pth", "--out", tmp_path / "c") == 1
    line = _one_error_line(capsys)
    assert "wrong.pth" in line and "1 missing keys: conv_offset_16.weight" in line


def test_bad_images_and_options(tree, tmp_path, capsys):
    root = tmp_path / "cs"
    truth = fakes.make_cityscapes(root, counts={"train": 2}, h=H, w=W)
    k0, k1 = sorted(truth)
    # unequal pair sizes
    from bsrdata.sources.folder import write_png_atomic

    write_png_atomic(truth[k0]["paths"]["rightImg8bit"], np.zeros((H, W - 2, 3), np.uint8))
    args = ["--root", root, "--weights", tree["random"], "--out", tmp_path / "c", "--device", "cpu",
            "--size", "64x96", "--iters", "1"]
    assert run(*args) == 1
    line = _one_error_line(capsys)
    assert "rightImg8bit.png" in line and "differs" in line
    assert not os.path.exists(stereo.cache_disparity_path(tmp_path / "c", "train", k0))
    # a non-image file
    os.unlink(truth[k0]["paths"]["leftImg8bit"])
    with open(truth[k1]["paths"]["leftImg8bit"], "w") as fh:
        fh.write("not a png")
    assert run(*args) == 1
    assert "not a readable image" in _one_error_line(capsys)
    # unwritable cache: a path below a regular file
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run(*common(tree, blocker / "cache")) == 1
    assert "--out" in _one_error_line(capsys)
    # options and roots
    assert run(*common(tree, tmp_path / "c2")[:-4], "--size", "64by96") == 1
    assert "--size" in _one_error_line(capsys)
    assert run("--root", tmp_path / "nowhere", "--weights", tree["random"], "--out", tmp_path / "c3") == 1
    assert "nowhere" in _one_error_line(capsys)
    if not torch.cuda.is_available():
        assert run(*common(tree, tmp_path / "c4")[:6], "--device", "cuda") == 1
        assert "CUDA" in _one_error_line(capsys)


def test_second_depth_run_into_one_cache_is_refused(tree, tmp_path, capsys):
    """One writer per cache folder: a run while another holds it is one line and writes nothing."""
    from bsrdata.lock import folder_lock

    out = tmp_path / "cache"
    with folder_lock(out, "depth"):
        assert run(*common(tree, out)) == 1
        line = _one_error_line(capsys)
        assert f"{out}: in use by another bsr process (depth, pid" in line
        assert sorted(os.listdir(out)) == [".bsr-lock"]
    assert run(*common(tree, out)) == 0
    assert not (out / ".bsr-lock").exists()
