"""perf/loader.py runs end to end at a tiny size (both formats written, read through DataLoaders)."""

import importlib.util
import os


def test_perf_loader_tiny(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "perf", "loader.py")
    spec = importlib.util.spec_from_file_location("perf_loader", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    res = mod.main(["--size", "64x96", "--items", "24", "--workers", "1", "--repeats", "1",
                    "--city-size", "64x128", "--city-items", "2", "--json", str(tmp_path / "r.json")])
    assert set(res["nyuv2_bytes_per_item"]) == {"format1", "format2"}
    assert res["ratio_new_over_old"]["1"]["median"] > 0 and (tmp_path / "r.json").exists()
    assert res["ratio_ring_over_old"]["1"]["median"] > 0 and res["crop192_ring_ratio"]["median"] > 0
