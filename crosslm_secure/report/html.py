"""Self-contained HTML pages: one stylesheet, escaped text, tables, figures inlined as base64 PNG.

Every page built here opens offline from a single file: no script, no external asset. Text
from a run (synthetic samples are LLM output, client ids and reasons come from config and
events) always goes through :func:`esc`; only the helpers here produce markup.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1240px;margin:1.5em auto;"
    "padding:0 1em;color:#1d1d1f;line-height:1.45}"
    "h1{font-size:1.6em;margin-bottom:0.2em}h2{border-bottom:2px solid #ddd;padding-bottom:0.15em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:0.6em 0;max-width:100%;display:block;overflow-x:auto}"
    "td,th{border:1px solid #c8c8c8;padding:3px 8px;font-size:0.9em;text-align:left;vertical-align:top}"
    "th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".pass{color:#126b12;font-weight:bold}.fail,.error{color:#b00;font-weight:bold}"
    ".notrun,.incomplete,.self-attested{color:#a60;font-weight:bold}"
    ".note{color:#555;font-size:0.92em}.muted{color:#777}"
    ".side{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}.side>div{flex:1 1 480px;min-width:0}"
    "img{max-width:100%;height:auto}figure{margin:0.6em 0}figcaption{font-size:0.85em;color:#555}"
    ".sample{font-size:0.88em;white-space:pre-wrap;word-break:break-word}"
    "details{margin:0.5em 0}summary{cursor:pointer;font-weight:600}"
    "pre{overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}p,li,dd,figcaption{overflow-wrap:anywhere}"
    "code{font-size:0.85em;word-break:break-all}table.mia td,table.mia th{font-size:0.8em;padding:2px 5px}"
)


def esc(value: Any) -> str:
    """Any value as HTML text (quotes too, so it is safe in attributes)."""
    return html.escape(str(value), quote=True)


def page(title: str, sections: Iterable[str]) -> str:
    """A whole HTML document around already-rendered section markup."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def section(section_id: str, title: str, *body: str) -> str:
    """One ``<section>`` with an id (tests and readers find sections by it) and a heading."""
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>\n' + "\n".join(body) + "\n</section>"


def para(text: str, css: str = "") -> str:
    cls = f' class="{esc(css)}"' if css else ""
    return f"<p{cls}>{esc(text)}</p>"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, raw: bool = False, digits: int = 3) -> str:
    """A table; cells are escaped unless ``raw`` (then they are markup built by these helpers).

    Numbers are right-aligned so columns of figures read down.
    """
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            css = ' class="num"' if isinstance(cell, int | float) and not isinstance(cell, bool) else ""
            cells.append(f"<td{css}>{cell if raw else esc(fmt(cell, digits))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def fmt(value: Any, digits: int = 3) -> str:
    """A number as a reader wants it: fixed decimals, ``inf``, blank for missing/NaN."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}f}"
    return str(value)


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_png(data: bytes, alt: str, caption: str = "") -> str:
    """An inlined PNG with alt text (and a caption when given)."""
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{esc(alt)}" src="{png_uri(data)}">{cap}</figure>'


def figure_file(path: Path, alt: str, caption: str = "") -> str:
    """An inlined PNG from a file, or a sentence saying it is missing."""
    path = Path(path)
    if not path.is_file():
        return para(f"Figure {path.name} is missing; rebuild it with the command that wrote this report.", "note")
    return figure_png(path.read_bytes(), alt, caption)


def figure_mpl(fig: Any, alt: str, caption: str = "") -> str:
    """A matplotlib figure rendered to PNG, closed, and inlined."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return figure_png(buffer.getvalue(), alt, caption)
