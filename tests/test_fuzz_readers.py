"""Seeded fuzz test of the readers (tests/fuzz_readers.py): a few hundred mutations of a small valid
dataset; verify, open_dataset, preview, export and bench each succeed or raise BsrError, never another
exception, never open a file outside the dataset, and never allocate beyond a bound (the run has a 2 GiB
address-space limit, while a crafted shard can declare many GiB)."""

import json
import os
import resource
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LIMIT = 2 << 30


def _limit():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def test_readers_survive_seeded_mutations(tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MALLOC_ARENA_MAX="2")
    r = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_readers.py"), "--seed", "0", "--rounds", "200",
                        "--work", str(tmp_path / "fz")], capture_output=True, text=True, env=env,
                       preexec_fn=_limit, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["failures"] == [], json.dumps(res["failures"], indent=1)[:4000]
    for reader in ("verify", "open_dataset", "preview", "export", "bench"):
        # the mutations bite (each reader refused some) and most readers still read what is intact
        assert res["counts"].get(f"{reader}:BsrError", 0) > 10, res["counts"]
        assert res["counts"].get(f"{reader}:ok", 0) >= 1, res["counts"]
