"""tqdm glue shared by the commands."""

from __future__ import annotations


def bar_callback(bar):
    """Return ``progress(done, total)`` that drives the tqdm ``bar`` (the total may change as work is found)."""

    def progress(done, total):
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return progress


class LazyBar:
    """A tqdm bar that appears on the first ``progress(done, total)`` call with its real total, so no empty
    0-item bar is drawn before the work is known. ``close()`` is safe whether or not it appeared."""

    def __init__(self, **tqdm_kwargs):
        self.kwargs = tqdm_kwargs
        self.bar = None

    def __call__(self, done, total):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, **self.kwargs)
            self._drive = bar_callback(self.bar)
        self._drive(done, total)

    def close(self, leave: bool = True):
        if self.bar is not None:
            if not leave:
                self.bar.leave = False
            self.bar.close()
