"""The ``bsr`` command line."""
