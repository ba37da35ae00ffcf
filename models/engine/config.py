"""Reading a training config: a YAML file plus ``--set section.key=value`` overrides -> the user dict.

``read_yaml(path)`` and ``apply_overrides(user, sets)`` give the user dict that ``Task.config`` merges into
the task's defaults; ``load_user_config(path, sets)`` does both. Every problem is one BsrError line naming the
file or ``--set``.
"""

from __future__ import annotations

from bsrdata.errors import BsrError

__all__ = ["read_yaml", "apply_overrides", "load_user_config"]


def read_yaml(path) -> dict:
    """A YAML config file as a dict (BsrError naming the file on any problem)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise BsrError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise BsrError(f"{path}: is a folder, not a YAML file") from None
    except UnicodeDecodeError:
        raise BsrError(f"{path}: not valid YAML (not UTF-8 text)") from None
    except OSError as exc:
        raise BsrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise BsrError(f"{path}: not valid YAML" + (f" (line {line + 1})" if line is not None else "")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BsrError(f"{path}: top level must be a mapping of sections")
    return data


def apply_overrides(user: dict, sets) -> dict:
    """Apply ``section.key=value`` strings (value parsed as YAML) onto the user config dict (in place)."""
    import yaml

    for s in sets:
        if "=" not in s:
            raise BsrError(f"--set: expected key=value, got {s!r}")
        key, val = s.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise BsrError(f"--set: {key!r} is not a dotted key like train.iterations")
        d = user
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise BsrError(f"--set: {key} goes through a value, not a section")
        try:
            d[parts[-1]] = yaml.safe_load(val)
        except yaml.YAMLError:
            raise BsrError(f"--set: cannot parse the value of {key}") from None
    return user


def load_user_config(path=None, sets=()) -> dict:
    """``read_yaml(path)`` (``{}`` without a path) with ``sets`` applied."""
    return apply_overrides(read_yaml(path) if path else {}, sets)
