"""``bsr bench`` end to end through the CLI entry point (exit codes, printed table, bad input)."""

import json
import sys

import pytest
from cli_run import bsr as _run
from sr_fakes import make_bench_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_cli_ds")
    make_bench_dataset(root, n_test=5, h=24, w=32)
    return root


def test_bench_bicubic_prints_table(dataset, tmp_path, capsys):
    code, out, err = _run(["bench", "--data", str(dataset), "--method", "bicubic", "--out", str(tmp_path),
                           "--crop-border", "4"], capsys)
    assert code == 0, err
    assert out.splitlines()[0] == "| Method | Group1 | Group2 | Group3 | Group4 | Group5 | Avg |"
    assert out.splitlines()[2].startswith("| bicubic |")
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["crop_border"] == 4 and len(doc["methods"]) == 1
    # a rerun resumes: nothing left to compute, same table
    code2, out2, _ = _run(["bench", "--data", str(dataset), "--method", "bicubic", "--out", str(tmp_path),
                           "--crop-border", "4"], capsys)
    assert code2 == 0 and out2 == out


def test_missing_group(dataset, tmp_path, capsys):
    code, out, err = _run(["bench", "--data", str(dataset), "--method", "bicubic", "--groups", "4-7",
                           "--out", str(tmp_path)], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("bsr: error: ")
    assert "no test group 6" in err and "Traceback" not in err


def test_failing_command_keeps_bicubic_and_exits_nonzero(dataset, tmp_path, capsys):
    bad = f"broken=command:{sys.executable} -c 'import sys; sys.exit(2)' {{in}} {{out}}"
    code, out, err = _run(["bench", "--data", str(dataset), "--method", "bicubic", "--method", bad,
                           "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "| bicubic |" in out and "broken" not in out
    assert "bsr: error: broken: command exited with status 2" in err
    # the default is the CMOS test code's convention: Y channel, no border crop; recorded in every table
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["crop_border"] == 0 and doc["conventions"]["sr"] == {**doc["conventions"]["sr"], "channel": "Y",
                                                                    "crop_border": 0}
    assert "border crop 0 px" in out and (tmp_path / "bench.csv").read_text().splitlines()[1].endswith(",Y,0")


def test_bad_checkpoint_is_one_line(dataset, tmp_path, capsys):
    (tmp_path / "junk").mkdir()
    code, out, err = _run(["bench", "--data", str(dataset), "--method", "bicubic", "--method", "oracle",
                           "--ckpt", str(tmp_path / "junk"), "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert code == 1
    assert "| bicubic |" in out
    errs = [ln for ln in err.splitlines() if ln.startswith("bsr: error:")]
    assert len(errs) == 1 and "junk" in errs[0] and "Traceback" not in err


def test_unknown_method_and_missing_dataset(dataset, tmp_path, capsys):
    code, _, err = _run(["bench", "--data", str(dataset), "--method", "srgan", "--out", str(tmp_path)], capsys)
    assert code == 1 and "unknown bench method 'srgan'" in err
    code, _, err = _run(["bench", "--data", str(tmp_path / "nope"), "--method", "bicubic"], capsys)
    assert code == 1 and "nope" in err
