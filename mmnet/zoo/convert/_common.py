"""What the converters share: writing the converted model with its provenance, and saying what was done."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from ..hub import WEIGHTS_NAME


class Converted(Protocol):
    """A converter's result: the model, the folder it was written to (None: not written) and its summary."""

    model: Any
    out: Path | None

    def summary(self) -> str: ...


def finish_conversion(
    result: Converted,
    save: Callable[..., Path],
    out: str | Path | None,
    converted_from: dict[str, Any],
    log: Callable[[str], None] | None,
    use: str,
    *,
    dtype: torch.dtype,
    show_dtype: bool = False,
    **save_options: Any,
) -> None:
    """A converter's last steps. With `out`: ``save(result.model, out, dtype=dtype, extra={"converted_from": ...},
    **save_options)``, the folder in ``result.out``. With `log`: the summary and, once written, the files (with the
    storage dtype when `show_dtype`) and `use`, how to load them (``{}`` stands for the folder)."""
    if out is not None:
        result.out = save(result.model, out, dtype=dtype, extra={"converted_from": converted_from}, **save_options)
    if log is not None:
        log(result.summary())
        if result.out is not None:
            stored = f" ({str(dtype).removeprefix('torch.')})" if show_dtype else ""
            log(
                f"wrote    {result.out / WEIGHTS_NAME}{stored} and config.json\n"
                f"use      {use.format(repr(str(result.out)))}"
            )
