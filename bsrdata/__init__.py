"""bsrdata: blind super-resolution datasets with space-variant out-of-focus blur.

Importing this package never imports torch. The PyTorch wrapper lives in :mod:`bsrdata.dataset`.
"""

from bsrdata.errors import BsrError

__version__ = "0.1.0"
GENERATOR_VERSION = "bsrdata-0.1.0"

__all__ = ["BsrError", "open_dataset", "__version__", "GENERATOR_VERSION"]


def open_dataset(root, split, group=None):
    """Open a built dataset; see :func:`bsrdata.shards.open_dataset`."""
    from bsrdata.shards import open_dataset as _open

    return _open(root, split, group=group)
