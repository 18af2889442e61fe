"""Reading the authors' ``args.pkl`` files without running code: a restricted unpickler.

Official training scripts (CATs, LPMFlow) pickle their ``argparse.Namespace`` next to the weights. Plain
``pickle.load`` on such a file runs whatever the file says. `load_namespace` accepts exactly one global,
``argparse.Namespace``, holding plain values (str, int, float, bool, None, lists, tuples, dicts of those);
anything else raises `CheckpointError` before a single object of it is built.
"""

from __future__ import annotations

import argparse
import io
import pickle
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, WeightsNotFoundError

_ALLOWED_GLOBALS = {("argparse", "Namespace")}
_PLAIN = (str, int, float, bool, type(None))


class _NamespaceUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return argparse.Namespace
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _is_plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def load_namespace(path: str | Path) -> dict[str, Any]:
    """``args.pkl`` -> its arguments as a dict of plain values; `CheckpointError` for anything else."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"argument file not found: {path}")
    try:
        obj = _NamespaceUnpickler(io.BytesIO(path.read_bytes())).load()
    except Exception as exc:  # pickle raises many types on crafted or truncated input
        raise CheckpointError(
            f"{path} is not a pickled argparse.Namespace of plain values ({type(exc).__name__}: {exc}); mmnet "
            "never unpickles arbitrary objects"
        ) from exc
    values = vars(obj) if isinstance(obj, argparse.Namespace) else obj
    if not isinstance(values, dict) or not _is_plain(values):
        raise CheckpointError(f"{path} holds {type(obj).__name__}, not an argparse.Namespace of plain values")
    return dict(values)
