"""The one escaping helper of the report: every string that reaches HTML or a plotly figure goes through `esc`.

Packet data (hostnames, HTTP headers, DNS names, SNI, tshark's dissection of them) is attacker-controlled, and
both a browser and plotly.js act on markup: plotly.js renders `<a href>`, `<span style>`, `<b>` in titles,
labels, legends and hover text (research §0.6, §4.2), and MathJax would act on `$...$`. So text is made
printable and cut with its length shown (`safe_text`), then HTML-escaped, quotes included so it is also safe
in an attribute, and `$` becomes an entity so no string can start a TeX run. Browsers and plotly.js both
decode the entities back, so the analyst sees the original characters, inert.
"""

from __future__ import annotations

import html

from pcapsense.decode.text import safe_text

TEXT_LIMIT = 600  # characters kept in a table cell or paragraph: above the decoders' 256 plus their length note
LABEL_LIMIT = 48  # characters kept in a chart label, legend entry or axis category


def esc(value: object, limit: int = TEXT_LIMIT) -> str:
    """Printable, length-capped, HTML-escaped text of `value` (None is the empty string)."""
    if value is None:
        return ""
    return html.escape(safe_text(str(value), limit), quote=True).replace("$", "&#36;")


def label(value: object) -> str:
    """`esc` for chart labels, which must stay short."""
    return esc(value, LABEL_LIMIT)
