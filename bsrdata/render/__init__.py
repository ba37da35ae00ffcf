"""Blur operators: ``layered`` (SYNDOF-style compositing, the default) and ``gather`` (per-pixel Gaussian).

- :func:`render_layered` (numba): FACTS §2 layered rendering with the partial-occlusion fill;
  :func:`set_render_threads` sets its default numba thread count (1 in build workers).
- :func:`render_gather`, :func:`render_gather_points` (numba): per-pixel normalised Gaussian.
- :func:`gaussian_kernel_1d`: the normalised kernel in the fixed max_coc window.
- :mod:`bsrdata.render.reference`: slow numpy float64 twins (``layered_reference``, ``gather_reference``).
"""

from bsrdata.render.common import count_layers, gaussian_kernel_1d
from bsrdata.render.gather import render_gather, render_gather_points
from bsrdata.render.layered import render_layered, set_render_threads

__all__ = ["render_layered", "set_render_threads", "render_gather", "render_gather_points", "gaussian_kernel_1d",
           "count_layers"]
