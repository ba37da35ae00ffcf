"""Blur operators: ``layered`` (SYNDOF-style compositing) and ``gather`` (per-pixel Gaussian)."""
