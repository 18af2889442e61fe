"""`PretrainedCfg`: where one set of registered weights lives and what it is (the zoo's lowest layer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PretrainedCfg:
    """Where one set of weights lives and what it is.

    The weights are a folder holding ``config.json`` + ``model.safetensors``: ``hub_id`` (+ ``revision``) on
    the Hugging Face hub, or ``local_dir`` on disk (absolute, or relative to the installed package).
    ``sha256`` is checked on load; ``license``, ``metrics`` and ``notes`` are shown by ``mmnet models``
    and the model cards.
    """

    hub_id: str | None = None
    revision: str | None = None
    local_dir: str | None = None
    sha256: str | None = None
    license: str = "unknown"
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
