import os

os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".numba_cache"))
# pytest-xdist runs one worker per core: one intra-op thread each avoids oversubscription
# (a tiny forward pass was measured 35x slower with two torch threads per worker on 2 cores).
os.environ.setdefault("OMP_NUM_THREADS", "1")
