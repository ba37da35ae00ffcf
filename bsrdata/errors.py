"""The one exception type the toolkit raises for bad input.

Library code raises :class:`BsrError` with a single line that names the file or option at fault
and the problem (``"splits.mat: trainNdxs has index 1450, the .mat has 1449 frames"``). The CLI prints
that line as ``bsr: error: ...`` and exits with status 1; it never shows a traceback for bad input.
"""


class BsrError(Exception):
    """Bad input or an unrecoverable condition, described in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
