"""bsrdata.figures, bsrdata.card and the CLI options --strata / --figures / bsr info on a tiny fake dataset."""

import json
import os

import numpy as np
import pytest
from cli_run import bsr_code as _run
from sr_fakes import make_bench_dataset

from bsrdata import card
from bsrdata import figures as fg
from bsrdata.errors import BsrError
from bsrdata.manifest import sha256_file

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("figs_ds")
    make_bench_dataset(root, n_test=5, n_train=5, h=32, w=40)
    return root


def _png_ok(path):
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
        a = np.asarray(im.convert("RGB"))
    assert a.std() > 5  # not a blank page


def test_parse_crop():
    assert fg.parse_crop("1,2,30,40") == (1, 2, 30, 40)
    assert fg.parse_crop(None) is None
    for bad in ("1,2,3", "a,b,c,d", "0,0,1,5", "-1,0,4,4"):
        with pytest.raises(BsrError, match="--crop"):
            fg.parse_crop(bad)


def test_pick_crop_finds_the_differing_window():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, 80, 3)).astype(np.uint8)
    other = base.copy()
    other[40:52, 10:22] = 255 - other[40:52, 10:22]  # the methods differ only here
    assert fg.pick_crop([base, other], (12, 12)) == (10, 40, 12, 12)


def test_bench_cli_strata_and_figures(dataset, tmp_path, capsys):
    out, figs = tmp_path / "bench", tmp_path / "figs"
    rc = _run(["bench", "--data", str(dataset), "--method", "bicubic", "--method", "nn=command:cp -r {in}/. {out}",
               "--out", str(out), "--strata", "--figures", str(figs)])
    # the nn method writes LR-size images: an error line, bicubic still tabulated
    assert rc == 1
    printed = capsys.readouterr().out
    assert "Stratified scores" in printed and "sigma[0,1)" in printed
    doc = json.loads((out / "strata.json").read_text())
    assert list(doc["methods"]) == ["bicubic"]
    names = sorted(os.listdir(figs))
    assert "table2_bars.png" in names and "psnr_vs_sigma.png" in names
    assert any(n.startswith("compare_") for n in names)
    for n in names:
        _png_ok(figs / n)


def test_bench_cli_bad_crop_is_one_line(dataset, tmp_path, capsys):
    assert _run(["bench", "--data", str(dataset), "--method", "bicubic", "--out", str(tmp_path / "b"),
                 "--figures", str(tmp_path / "f"), "--crop", "1,2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bsr: error: --crop")
    assert not (tmp_path / "b").exists()


def test_card_numbers_and_files(dataset, tmp_path, capsys):
    info = card.collect(dataset)
    assert info["manifest_sha256"] == sha256_file(os.path.join(dataset, "manifest.json"))
    te = info["splits"]["test"]
    assert (te["renderings"], te["invariant"], te["variant"]) == (10, 5, 5)
    assert info["groups"]["1"] == {"members": 5, "invariant": 1}
    # the fake VA σ maps are half 0.3, half 0.8; IVA 1.5 everywhere (tests/sr_fakes.py)
    assert te["sigma"]["va"]["mean"] == pytest.approx(0.55, abs=1e-6)
    assert te["sigma"]["iva"]["max"] == pytest.approx(1.5)
    assert sum(te["sigma"]["iva"]["hist"]) == 5 * 32 * 40
    assert _run(["info", str(dataset), "--card", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "CARD.md").read_text()
    assert info["manifest_sha256"] in md and "card_sigma_hist.png" in md
    assert "| 10 | 5 | 5 | 40x32 | 1 |" in md
    _png_ok(tmp_path / "card_sigma_hist.png")
    capsys.readouterr()
    assert _run(["info", str(dataset)]) == 0
    assert "Dataset card" in capsys.readouterr().out


def test_info_not_a_dataset(tmp_path, capsys):
    assert _run(["info", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_eval_figure_draws(tmp_path):
    rng = np.random.default_rng(1)
    gt = np.full((32, 40), 0.5)
    gt[:, 20:] = 3.0
    seg = (np.arange(40)[None].repeat(32, 0) // 10).astype(np.uint8)
    sample = {"blur": gt, "seg": seg}
    p = fg.eval_figure(sample, gt + rng.normal(0, 0.3, gt.shape), seg[:, ::-1], 5.0, tmp_path / "e.png", title="t")
    _png_ok(p)


def test_info_reads_a_default_build_in_a_fresh_process(tmp_path):
    """`bsr info` on a default (format 2, Blosc) build in its own process: the card must open shards
    through the reader that registers the Blosc filter (make demo failed here when it did not)."""
    import subprocess
    import sys

    import fakes

    from bsrdata.build import build_dataset
    from bsrdata.degrade import DegradeConfig
    from bsrdata.sources.folder import FolderSource

    fakes.make_folder(tmp_path / "src", splits={"train": 2, "test": 5}, h=16, w=20)
    build_dataset(FolderSource(tmp_path / "src", num_classes=5), tmp_path / "ds", DegradeConfig(max_coc=5))
    assert json.load(open(tmp_path / "ds" / "manifest.json"))["attrs"].get("shard_format") == 2
    r = subprocess.run([sys.executable, "-m", "bsrdata.cli.main", "info", str(tmp_path / "ds")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Dataset card" in r.stdout
