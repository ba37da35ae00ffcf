"""Package data: the release recipes (``<name>.json``), copies of ``manifests/*.json`` in the repository.

Shipped inside the package so :func:`bsrdata.recipes.load_recipe` finds them from any install
(``pip install .`` or ``-e .``); a test keeps the two copies identical.
"""
