"""Readers that yield plain :class:`bsrdata.sources.base.Record` objects."""
