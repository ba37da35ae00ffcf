"""Layered (SYNDOF) defocus rendering. Interim: the straightforward full-frame implementation."""

from __future__ import annotations

from bsrdata.render.reference import layered_opencv


def render_layered(img, coc, max_coc, *, near=None, floor_colour=False, coc_step=0.1):
    """Layered defocus rendering (FACTS §2); see module docs."""
    return layered_opencv(img, coc, max_coc, near=near, floor_colour=floor_colour, coc_step=coc_step)
