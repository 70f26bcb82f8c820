"""The one escaping helper of the report: every string that reaches HTML or a plotly figure goes through `esc`.

Packet data (hostnames, HTTP headers, DNS names, SNI, tshark's dissection of them) is attacker-controlled, and
both a browser and plotly.js act on markup: plotly.js renders `<a href>`, `<span style>`, `<b>` in titles,
labels, legends and hover text (research §0.6, §4.2), and MathJax would act on `$...$`. So text is made
printable and cut with its length shown (`safe_text`), then escaped: `&`, `<`, `>`, both quotes (so it is also
safe in an attribute) and `$` (so no string can start a TeX run). Quotes and `$` become numeric entities
because plotly.js decodes only numeric entities and a few named ones (`&lt;`, `&gt;`, `&amp;`): the analyst
then sees the original characters, inert, both in the page and in the charts.

Text the decoders produced is printable already; `safe_text` runs again only on text that is not (tshark's
output, a path) or that must be cut, because it doubles backslashes: an escaped byte would show twice escaped.
"""

from __future__ import annotations

from pcapsense.decode.text import safe_text

TEXT_LIMIT = 600  # characters kept in a table cell or paragraph: above the decoders' 256 plus their length note
LABEL_LIMIT = 48  # characters kept in a chart label, legend entry or axis category
ENTITIES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;", "$": "&#36;"})


def esc(value: object, limit: int = TEXT_LIMIT) -> str:
    """Printable, length-capped, escaped text of `value` for HTML and plotly (None is the empty string)."""
    if value is None:
        return ""
    text = str(value)
    if len(text) > limit or not text.isprintable():
        text = safe_text(text, limit)
    return text.translate(ENTITIES)


def label(value: object) -> str:
    """`esc` for chart labels, which must stay short."""
    return esc(value, LABEL_LIMIT)
