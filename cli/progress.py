"""tqdm glue shared by the commands."""


def bar_callback(bar):
    """Return ``progress(done, total)`` that drives the tqdm ``bar`` (the total may change as work is found)."""

    def progress(done, total):
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - bar.n)

    return progress
