"""The JSON rendering shared by `--format json`, findings.json and the scan catalog."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """The document as plain JSON values: numpy scalars (detector metrics often hold them) become Python numbers,
    NaN and infinities null (JSON has no such numbers, RFC 8259; jq, browsers and most parsers reject Python's
    NaN/Infinity extension)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if hasattr(value, "item"):
        return finite(value.item())
    return value


def dumps(doc: Any, indent: int | None = 2) -> str:
    return json.dumps(finite(doc), indent=indent, allow_nan=False)
