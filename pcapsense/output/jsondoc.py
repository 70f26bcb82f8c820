"""The JSON rendering shared by `--format json`, findings.json and the scan catalog."""

from __future__ import annotations

import json
from typing import Any


def plain(value: Any) -> Any:
    """numpy scalars (detector metrics often hold them) become Python numbers."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(doc: Any, indent: int | None = 2) -> str:
    return json.dumps(doc, indent=indent, default=plain)
