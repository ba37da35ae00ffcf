"""scripts/gpu_check.sh (the prepared GPU measurement, docs/pipeline.md "GPU check") parses, refuses an
unknown mode with one line and exit 2, and names only perf scripts that exist."""

import os
import re
import subprocess

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SCRIPT = os.path.join(ROOT, "scripts", "gpu_check.sh")


def test_syntax():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


def test_unknown_mode(tmp_path):
    p = subprocess.run(["bash", SCRIPT, str(tmp_path / "o"), "fast"], capture_output=True, text=True)
    assert p.returncode == 2
    assert "unknown mode 'fast'" in p.stderr
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_perf_scripts_exist():
    with open(SCRIPT) as f:
        names = set(re.findall(r"perf/(\w+)\.py", f.read()))
    assert names >= {"train", "loader", "cityscapes_build"}
    for n in names:
        assert os.path.isfile(os.path.join(ROOT, "perf", n + ".py")), n
