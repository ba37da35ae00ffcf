"""Networks of the reference model, behind an explicit registry (``create_model``)."""

from bsrdata.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
