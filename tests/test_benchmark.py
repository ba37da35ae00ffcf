"""bsrdata.benchmark: group handling, deduplication, command methods, resume, table formats."""

import csv
import io
import json
import os
import sys
import textwrap

import numpy as np
import pytest
from sr_fakes import make_bench_dataset

from bsrdata import benchmark as bm
from bsrdata.degrade import imresize_bicubic
from bsrdata.errors import BsrError
from bsrdata.metrics import psnr_y, ssim_y, to_uint8
from bsrdata.shards import read_sample


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_ds")
    make_bench_dataset(root, n_test=10, h=32, w=40)
    return root


class Counting(bm.Method):
    """Nearest-neighbour ×4, counting how often each LR image is processed."""

    def __init__(self, label="nearest", fail_after=None):
        self.label = label
        self.spec = "test-nearest"
        self.calls = {}
        self.chunk = 3
        self.fail_after = fail_after

    def run(self, samples, workdir):
        out = []
        for uid, s in samples:
            if self.fail_after is not None and sum(self.calls.values()) >= self.fail_after:
                raise BsrError("boom")
            self.calls[uid] = self.calls.get(uid, 0) + 1
            out.append(np.repeat(np.repeat(s["lr"], 4, 0), 4, 1))
        return out


def _nearest(lr):
    return np.repeat(np.repeat(lr, 4, 0), 4, 1)


def test_parse_groups():
    assert bm.parse_groups("1-5") == [1, 2, 3, 4, 5]
    assert bm.parse_groups("3,1") == [1, 3]
    assert bm.parse_groups("all") == [1, 2, 3, 4, 5]
    assert bm.parse_groups("2-3,5") == [2, 3, 5]
    for bad in ("0", "a-b", "5-2", "x"):
        with pytest.raises(BsrError):
            bm.parse_groups(bad)


def test_units_are_deduplicated_across_groups(dataset):
    data = bm.BenchData(dataset, "1-5")
    # 10 test keys: 10 VA renderings + 5 folds of 2 IVA renderings = 20 distinct LR images
    assert len(data.units) == 20
    assert all(len(data.groups[g]) == 10 for g in range(1, 6))
    inv = {g: {u for u in data.groups[g] if data.units[u].invariant} for g in data.groups}
    assert all(len(v) == 2 for v in inv.values())
    assert not set.intersection(*inv.values())
    # the VA rendering of key te000 is one unit, shared by groups 2..5
    va0 = [u for u, x in data.units.items() if x.key == "te000" and not x.invariant]
    assert len(va0) == 1 and all(va0[0] in data.groups[g] for g in (2, 3, 4, 5))
    sub = bm.BenchData(dataset, "2")
    assert len(sub.units) == 10


def test_missing_group_is_one_clear_error(dataset):
    with pytest.raises(BsrError, match="no test group 6"):
        bm.BenchData(dataset, "1-6")


def test_each_lr_processed_once_and_group_means(dataset, tmp_path):
    data = bm.BenchData(dataset, "1-5")
    m = Counting()
    res = bm.run_bench(data, [m], tmp_path, crop_border=2)
    assert not res.errors
    assert set(m.calls) == set(data.units) and set(m.calls.values()) == {1}
    # independent recomputation of the group means straight from the manifest and shards
    man = json.loads((dataset / "manifest.json").read_text())
    row = res.rows[0]
    gp = []
    for g in range(1, 6):
        ps, ss = [], []
        for e in man["groups"][str(g)]:
            s = read_sample(os.path.join(dataset, e["shard"]), e["index"])
            sr = _nearest(s["lr"])
            ps.append(psnr_y(sr, s["hr"], 2))
            ss.append(ssim_y(sr, s["hr"], 2))
        assert row["groups"][str(g)]["psnr"] == pytest.approx(np.mean(ps), abs=1e-9)
        assert row["groups"][str(g)]["ssim"] == pytest.approx(np.mean(ss), abs=1e-9)
        gp.append(np.mean(ps))
    assert row["avg"]["psnr"] == pytest.approx(np.mean(gp), abs=1e-9)
    # the groups differ (they hold different IVA renderings)
    assert len({round(row["groups"][str(g)]["psnr"], 6) for g in range(1, 6)}) > 1


def test_resume_skips_done_units(dataset, tmp_path):
    data = bm.BenchData(dataset, "1-5")
    first = Counting(fail_after=7)
    res = bm.run_bench(data, [first], tmp_path)
    assert len(res.errors) == 1 and res.errors[0].startswith("nearest: boom")
    assert res.rows == []  # incomplete methods are not tabulated
    (jsonl,) = (tmp_path / "results").glob("*.jsonl")
    done = {json.loads(x)["uid"] for x in jsonl.read_text().splitlines()[1:]}
    assert len(done) == 6  # two whole chunks of 3 were stored; the failing chunk was not
    assert done < set(first.calls)
    second = Counting()
    res = bm.run_bench(data, [second], tmp_path)
    assert not res.errors
    assert set(second.calls) == set(data.units) - done
    assert len(res.rows) == 1


def test_bicubic_method(dataset, tmp_path):
    data = bm.BenchData(dataset, "1")
    res = bm.run_bench(data, [bm.get_method("bicubic")], tmp_path)
    uid = data.groups[1][0]
    s = data.load(uid)
    sr = to_uint8(imresize_bicubic(s["lr"] / 255.0, 4.0))
    rec = [json.loads(x) for x in open(tmp_path / "results" / (res.rows[0]["slug"] + ".jsonl"))][1:]
    first = {r["uid"]: r for r in rec}[uid]
    assert first["psnr"] == pytest.approx(psnr_y(sr, s["hr"]), abs=1e-9)
    # bicubic beats nearest on smooth content
    near = bm.run_bench(data, [Counting()], tmp_path / "n").rows[0]
    assert res.rows[0]["avg"]["psnr"] > near["avg"]["psnr"]


SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from PIL import Image
    src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "fail":
        print("model weights missing", file=sys.stderr)
        sys.exit(3)
    if mode == "nothing":
        sys.exit(0)
    for name in sorted(os.listdir(src)):
        lr = np.asarray(Image.open(os.path.join(src, name)).convert("RGB"))
        f = 2 if mode == "small" else 4
        sr = np.repeat(np.repeat(lr, f, 0), f, 1)
        Image.fromarray(sr).save(os.path.join(dst, name))
    """
)


@pytest.fixture()
def script(tmp_path):
    p = tmp_path / "my sr.py"  # a space in the path: arguments must survive without a shell
    p.write_text(SCRIPT)
    return str(p)


def _cmd(script, mode, label="ext"):
    return f"{label}=command:{sys.executable} '{script}' {{in}} {{out}} {mode}"


def test_command_method_matches_direct_computation(dataset, tmp_path, script):
    data = bm.BenchData(dataset, "1-5")
    ext = bm.get_method(_cmd(script, "ok"), chunk=7)
    assert ext.label == "ext"
    res = bm.run_bench(data, [ext], tmp_path / "o")
    assert not res.errors
    ref = bm.run_bench(data, [Counting()], tmp_path / "r").rows[0]
    got = res.rows[0]
    for g in range(1, 6):
        assert got["groups"][str(g)]["psnr"] == pytest.approx(ref["groups"][str(g)]["psnr"], abs=1e-9)
    assert not os.path.exists(tmp_path / "o" / "work" / got["slug"])  # scratch removed when done


def test_command_shell_mode(dataset, tmp_path, script):
    data = bm.BenchData(dataset, "3")
    ext = bm.get_method(f"command:{sys.executable} '{script}' {{in}} {{out}} ok && true", shell=True)
    res = bm.run_bench(data, [ext], tmp_path)
    assert not res.errors and len(res.rows) == 1


@pytest.mark.parametrize(
    "mode, message",
    [("fail", "exited with status 3: model weights missing"), ("nothing", "wrote no SR images"),
     ("small", "expected 40x32")],
)
def test_command_failures_keep_other_results(dataset, tmp_path, script, mode, message):
    data = bm.BenchData(dataset, "1-5")
    methods = [bm.get_method("bicubic"), bm.get_method(_cmd(script, mode, "bad")), Counting()]
    res = bm.run_bench(data, methods, tmp_path)
    assert len(res.errors) == 1
    assert res.errors[0].startswith("bad: ") and message in res.errors[0]
    assert [r["label"] for r in res.rows] == ["bicubic", "nearest"]
    md = (tmp_path / "bench.md").read_text()
    assert "bicubic" in md and "nearest" in md and "bad" not in md


def test_command_spec_errors():
    with pytest.raises(BsrError, match="must contain both"):
        bm.get_method("command:python x.py {in}")
    with pytest.raises(BsrError, match="unknown bench method"):
        bm.get_method("srgan")
    m = bm.get_method('command:"prog {in} {out}"')
    assert m.argv == ["prog", "{in}", "{out}"]


def test_command_not_found(dataset, tmp_path):
    data = bm.BenchData(dataset, "1")
    res = bm.run_bench(data, [bm.get_method("x=command:/nonexistent/prog {in} {out}")], tmp_path)
    assert res.errors == ["x: command not found: /nonexistent/prog"]


def test_table_formats(dataset, tmp_path):
    data = bm.BenchData(dataset, "1-5")
    res = bm.run_bench(data, [bm.get_method("bicubic"), Counting()], tmp_path, crop_border=4)
    md = (tmp_path / "bench.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "| Method | Group1 | Group2 | Group3 | Group4 | Group5 | Avg |"
    assert lines[2].startswith("| bicubic | ") and lines[3].startswith("| nearest | ")
    assert md == res.markdown
    rows = list(csv.reader(io.StringIO((tmp_path / "bench.csv").read_text())))
    assert rows[0][:3] == ["method", "Group1_psnr", "Group1_ssim"]
    assert rows[0][-4:] == ["Avg_psnr", "Avg_ssim", "sr_metric", "crop_border"]  # conventions on every row
    assert all(r[-2:] == ["Y", "4"] for r in rows[1:])
    assert md.rstrip().splitlines()[-1] == "Conventions: PSNR (dB) / SSIM on the Y channel, border crop 4 px."
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["crop_border"] == 4 and doc["conventions"]["sr"]["crop_border"] == 4
    assert doc["conventions"]["sr"]["channel"] == "Y"
    assert doc["dataset"]["manifest_sha256"] == data.manifest_sha256
    assert [m["label"] for m in doc["methods"]] == ["bicubic", "nearest"]
    for r, j in zip(rows[1:], doc["methods"]):
        assert float(r[1]) == pytest.approx(j["groups"]["1"]["psnr"], abs=1e-6)
        assert float(r[-3]) == pytest.approx(j["avg"]["ssim"], abs=1e-6)
        cell = md.splitlines()[2 + doc["methods"].index(j)].split(" | ")[1]
        assert cell == f"{j['groups']['1']['psnr']:.2f}/{j['groups']['1']['ssim']:.4f}"
    assert doc["methods"][0]["provenance"]["method"] == "bicubic"
    assert doc["methods"][0]["provenance"]["crop_border"] == 4
    assert doc["methods"][0]["provenance"]["conventions"]["sr"]["crop_border"] == 4  # the .jsonl header's
    # a different crop is a different table: earlier results are not mixed in
    res2 = bm.run_bench(data, [Counting()], tmp_path, crop_border=0)
    assert [r["label"] for r in res2.rows] == ["nearest"]


def test_rerun_with_new_identity_replaces_row_of_same_label(dataset, tmp_path):
    data = bm.BenchData(dataset, "1")
    bm.run_bench(data, [bm.get_method("bicubic"), Counting()], tmp_path)
    again = Counting()
    again.spec = "test-nearest-v2"  # e.g. a retrained checkpoint: new identity, same label

    def provenance():
        return {"method": again.spec, "label": again.label}

    again.provenance = provenance
    res = bm.run_bench(data, [again], tmp_path)
    assert [r["label"] for r in res.rows] == ["nearest", "bicubic"]
    assert res.rows[0]["provenance"]["method"] == "test-nearest-v2"


def test_unexpected_method_exception_is_one_line(dataset, tmp_path):
    class Broken(Counting):
        def run(self, samples, workdir):
            raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")

    data = bm.BenchData(dataset, "1")
    res = bm.run_bench(data, [Broken(label="broken"), bm.get_method("bicubic")], tmp_path)
    assert res.errors == ["broken: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"]
    assert [r["label"] for r in res.rows] == ["bicubic"]


# ------------------------------------------------------------------------- registry, scoring loop, tables
@bm.register_method("test-nearest")
def _nearest_factory(label, body, **options):
    return Counting(label=label or "test-nearest")


def test_method_registry_builds_registered_names_and_labels():
    assert "bicubic" in bm.METHODS and "test-nearest" in bm.METHODS
    m = bm.get_method("near=test-nearest", ckpt="ignored", device="cpu")
    assert isinstance(m, Counting) and m.label == "near"
    assert bm.split_label("near=test-nearest") == ("near", "test-nearest")
    assert bm.split_label("x=bicubic") == ("x", "bicubic")
    assert bm.split_label("x=nothing") == (None, "x=nothing")
    assert "test-nearest" in bm.method_names() and bm.method_names()[-1] == "command:"
    with pytest.raises(BsrError, match=r"unknown bench method 'srgan' \(known: .*bicubic.*test-nearest"):
        bm.get_method("srgan")
    with pytest.raises(BsrError, match="registered twice"):
        bm.register_method("bicubic")(lambda label, body, **o: None)


def test_score_units_is_the_loop_of_run_bench(dataset, tmp_path):
    data = bm.BenchData(dataset, "1-2")
    res = bm.run_bench(data, [Counting()], tmp_path)
    direct = bm.score_units(data, bm.CallableMethod(lambda s: _nearest(s["lr"])), list(data.units))
    assert set(direct) == set(data.units)
    summ = bm.summarise(data.groups, direct)
    assert res.rows[0]["avg"] == summ["avg"] and res.rows[0]["groups"] == summ["groups"]
    # a wrong-size SR is one error naming the method
    with pytest.raises(BsrError, match="bad: SR for"):
        bm.score_units(data, bm.CallableMethod(lambda s: s["lr"], label="bad"), list(data.units)[:1])


def test_benchdata_split_units(dataset):
    data = bm.BenchData(dataset, split="test")
    assert data.group_ids == ["test"]
    uids = data.groups["test"]
    assert len(uids) == len(set(uids)) == len(data.units)
    assert data.select(3) == {"test": uids[:3]}
    with pytest.raises(BsrError, match="no split 'nope'"):
        bm.BenchData(dataset, split="nope")


def test_parse_groups_names_its_option():
    with pytest.raises(BsrError, match="^--group: cannot read"):
        bm.parse_groups("x", option="--group")


def test_eval_table_layout():
    from bsrdata.tables import eval_csv, eval_markdown

    rows = {"1": {"n": 2, "blur_psnr": 30.123, "miou": float("nan")}, "avg": {"n": 2, "blur_psnr": 30.123}}
    assert eval_markdown(rows) == ("| | Blur PSNR | mIoU (%) | images |\n|---|---|---|---|\n"
                                   "| Group1 | 30.12 | – | 2 |\n| Avg | 30.12 | – | 2 |")
    assert eval_csv(rows).splitlines() == ["group,blur_psnr,miou,n", "Group1,30.123000,nan,2", "Avg,30.123000,,2"]
