"""uint8 images <-> network tensors: the one conversion pair of the SR methods, the engine and ``bsr sr``.

An image is uint8 RGB (H, W, 3); a tensor is float32 (1, 3, H, W) with values in [0, 1] (``x / 255``,
computed in float32). Back to uint8 with :func:`bsrdata.metrics.to_uint8` (``floor(x·255 + 0.5)``,
clipped), the rule the benchmark scores with.
"""

from __future__ import annotations

import numpy as np
import torch

from bsrdata.metrics import to_uint8

__all__ = ["image_to_tensor", "tensor_to_image"]


def image_to_tensor(img, device=None) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (1, 3, H, W) in [0, 1] on ``device`` (None: the CPU)."""
    x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32) / np.float32(255.0)).permute(2, 0, 1)[None]
    return x if device is None else x.to(device)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """The first image of a (N, 3, H, W) float tensor in [0, 1] -> uint8 RGB (H, W, 3) (rounded, clipped)."""
    return to_uint8(t[0].permute(1, 2, 0).float().detach().cpu().numpy())
