"""perf/build.py runs end to end at a tiny size (real-format fake .mat -> NYUv2Source -> shards), and its
1- and 2-worker builds are byte-identical."""

import importlib.util
import os


def test_perf_build_tiny(tmp_path, capsys):
    path = os.path.join(os.path.dirname(__file__), "..", "perf", "build.py")
    spec = importlib.util.spec_from_file_location("perf_build", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--frames", "10", "--size", "48x64", "--pool", "3", "--shard-size", "2", "--no-torch",
                    "--json", str(tmp_path / "r.json")])
    assert res["byte_identical"] is True
    assert res["runs"][1]["renderings"] == res["runs"][2]["renderings"] == 5 + 5 + 5
    assert res["read_rate_open_dataset"] > 0
    assert (tmp_path / "r.json").exists()


def test_perf_cityscapes_build_tiny(tmp_path):
    # the Cityscapes-size benchmark's real path (fake tree -> CityscapesSource, provided disparity -> shards)
    # at a tiny size; no timing is checked
    path = os.path.join(os.path.dirname(__file__), "..", "perf", "cityscapes_build.py")
    spec = importlib.util.spec_from_file_location("perf_city", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--size", "64x128", "--train", "2", "--val", "1", "--test", "5", "--workers", "1",
                    "--json", str(tmp_path / "r.json")])
    assert res["frames"] == 8 and res["renderings"] == 2 + 1 + 5 + 5 and res["invariant_renderings"] == 5
    assert res["full"]["total"] == 2975 + 500 + 1525 + 1525
    assert set(res["bytes_per_sample"]) == {"train", "val", "test"} and (tmp_path / "r.json").exists()
