"""The one place a torch device is chosen from what the user typed (``--device``, ``train.device``)."""

from __future__ import annotations

import torch

from bsrdata.errors import BsrError

__all__ = ["pick_device"]


def pick_device(device: str | None = "auto", *, option: str = "--device") -> torch.device:
    """``"auto"``/None -> CUDA when available, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    An unknown name or a CUDA device on a machine without CUDA is one BsrError line naming ``option``.
    """
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError):
        raise BsrError(f"{option}: unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BsrError(f"{option}: {device} requested but CUDA is not available in this PyTorch build / machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BsrError(f"{option}: {device} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BsrError(f"{option}: {device} requested but MPS is not available")
    return dev
