"""Argument checks shared by every public entry point.

Each helper returns the (normalised) value or raises `InputError` with one message shape:
``<name> must be <what is allowed>, got <the value>`` so the user sees which argument was wrong, what it was and
what would be accepted. Use them at construction time, before any work is done.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from mmnet.errors import InputError

__all__ = [
    "check",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_keys",
    "check_size",
    "check_writable_dir",
    "check_writable_file",
    "describe",
]


def describe(value: Any, limit: int = 80) -> str:
    """A short, unambiguous rendering of a bad value for an error message (type shown for non-numbers)."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if isinstance(value, (bool, numbers.Number, str)) or value is None:
        return text
    return f"{text} ({type(value).__name__})"


def check(condition: bool, message: str) -> None:
    """Raise `InputError(message)` unless `condition` holds (for rules the helpers below do not cover)."""
    if not condition:
        raise InputError(message)


def _fail(name: str, allowed: str, value: Any) -> InputError:
    return InputError(f"{name} must be {allowed}, got {describe(value)}")


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    """An integer (Python or numpy, never bool or a float like 2.0) within [min, max]."""
    lo, hi = min, max
    allowed = (
        "an integer"
        + (f" >= {lo}" if lo is not None and hi is None else "")
        + (f" <= {hi}" if hi is not None and lo is None else "")
        + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else "")
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _fail(name, allowed, value)
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise _fail(name, allowed, value)
    return value


def check_float(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """A finite real number (int or float, not bool) within the given bounds."""
    parts = ["a finite number"]
    if min is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {min:g}")
    if max is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {max:g}")
    allowed = " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if len(parts) > 1 else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _fail(name, allowed, value)
    value = float(value)
    if not math.isfinite(value):
        raise _fail(name, allowed, value)
    if min is not None and (value < min or (value == min and not min_inclusive)):
        raise _fail(name, allowed, value)
    if max is not None and (value > max or (value == max and not max_inclusive)):
        raise _fail(name, allowed, value)
    return value


def check_bool(name: str, value: Any) -> bool:
    """True or False (numpy bools too), not 0/1 or a string."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise _fail(name, "True or False", value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of `choices` (compared with ==; strings must match exactly)."""
    options = list(choices)
    try:
        ok = any(value == c and type(value) is type(c) for c in options)
    except Exception:  # an object whose == misbehaves is simply not a valid choice
        ok = False
    if not ok:
        raise _fail(name, "one of " + ", ".join(repr(c) for c in options), value)
    return value


def check_size(name: str, value: Any, *, min: int = 1, multiple_of: int | None = None) -> tuple[int, int]:
    """An image size (height, width): two integers >= min (and multiples of `multiple_of` when given)."""
    allowed = f"(height, width), two integers >= {min}" + (f" and multiples of {multiple_of}" if multiple_of else "")
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _fail(name, allowed, value)
    items = list(value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in items):
        raise _fail(name, allowed, value)
    h, w = (int(v) for v in items)
    if h < min or w < min or (multiple_of and (h % multiple_of or w % multiple_of)):
        raise _fail(name, allowed, value)
    return h, w


def check_keys(name: str, given: Iterable[str], allowed: Collection[str]) -> None:
    """No key of `given` outside `allowed` (unknown keywords, unknown config keys)."""
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(
            f"unknown {name} {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed)) or 'none'}"
        )


def check_writable_file(name: str, path: str | os.PathLike[str], *, create_parent: bool = False) -> Path:
    """An output file path whose folder exists (or is created with `create_parent`) and is writable, and which
    is not itself a folder: checked before any computation so a long run does not fail at its last step."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)) or not str(path):
        raise _fail(name, "a file path", path)
    out = Path(path).expanduser()
    if out.is_dir():
        raise InputError(f"{name} must be a file path, but {str(out)!r} is a folder")
    folder = out.parent
    if create_parent and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{name}: cannot create the folder {str(folder)!r} for {str(out)!r} ({exc})") from None
    if not folder.is_dir():
        raise InputError(f"{name}: the folder {str(folder)!r} of {str(out)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise InputError(f"{name}: {str(out)!r} is not writable (permission denied)")
    return out


def check_writable_dir(name: str, path: str | os.PathLike[str]) -> Path:
    """An output folder that exists and is writable, or can be created (its nearest existing parent is
    writable); nothing is created here."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)) or not str(path):
        raise _fail(name, "a folder path", path)
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{name} must be a folder, but {str(out)!r} is a file")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{name}: cannot create {str(out)!r}: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{name}: {str(out)!r} is not writable (permission denied on {str(probe)!r})")
    return out
