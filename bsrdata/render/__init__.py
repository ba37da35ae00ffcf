"""Blur operators: ``layered`` (SYNDOF-style compositing, the default) and ``gather`` (per-pixel Gaussian).

- :func:`render_layered` (numba): layered rendering with the partial-occlusion fill (docs/render.md);
  :func:`set_render_threads` sets its default numba thread count (1 in build workers). Modules:
  :mod:`.layered` (API, layer plan, driver), :mod:`.blur` (blur and compositing kernels), :mod:`.fill`
  (band search, adaptive SOR fill), :mod:`.fill_compare` (comparison-only fill solvers).
- :func:`render_gather`, :func:`render_gather_points` (numba): per-pixel normalised Gaussian.
- :func:`gaussian_kernel_1d`: the normalised kernel in the fixed max_coc window.
- :mod:`bsrdata.render.reference`: slow numpy float64 twins (``layered_reference``, ``gather_reference``).
- :mod:`bsrdata.render.kernel_cache`: numba's on-disk cache of these kernels, in a folder named by a hash
  of the ``bsrdata/render`` sources (so an edit to any of them never leaves a stale kernel).
"""

from bsrdata.render.common import count_layers, gaussian_kernel_1d
from bsrdata.render.gather import render_gather, render_gather_points
from bsrdata.render.layered import render_layered, set_render_threads

__all__ = ["render_layered", "set_render_threads", "render_gather", "render_gather_points", "gaussian_kernel_1d",
           "count_layers"]
