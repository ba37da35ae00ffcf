import os
import sys

import pytest

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))
# pytest-xdist runs one worker per core: one intra-op thread each avoids oversubscription
# (a tiny forward pass was measured 35x slower with two torch threads per worker on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# one numba thread for the renderer in the test processes: xdist already runs one worker per core
# (test_render checks 1 against 2 threads in a subprocess)
from bsrdata.render import set_render_threads

set_render_threads(1)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op torch thread per test (on a busy 2-core machine two threads were up to 35x slower).
    Only where the test module already imported torch: bsrdata-only tests never pay for importing it."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
