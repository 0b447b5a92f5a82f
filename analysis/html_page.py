"""Self-contained HTML pages: one job, the page, its tables and its embedded figures.

:func:`render_html` turns ``[(heading, html body), ...]`` into one page with a table of contents
and inline CSS (opens without a server); :func:`table_html` formats numbers and escapes text;
:func:`figure_html` embeds a matplotlib Figure as a base64 PNG (``data-name`` = the figure's name),
rendered once by :func:`figure_png`. What a report or a sweep puts on its page is their business.

Imports: the standard library and numpy (a Figure is only asked to ``savefig``).
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

__all__ = ["render_html", "table_html", "figure_html", "figure_png", "fmt", "scrolling"]

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
.scroll { overflow-x: auto; max-width: 100%; margin: .8em 0; }
table { border-collapse: collapse; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; }
.note { background: #f7f7e8; border-left: 4px solid #cc9; padding: .4em .8em; font-size: .92em; }
.bad { color: #b00; font-weight: bold; }
.failed { background: #fbeaea; border-left: 4px solid #b00; padding: .4em .8em; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: .3em .8em; margin: .4em 0; }
.warn ul, .failed ul { margin: .2em 0; padding-left: 1.2em; }
ul.toc { columns: 2; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def figure_png(fig, dpi: int = 100) -> bytes:
    """The Figure rendered once as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_html(fig, caption: str = "", name: str | None = None, dpi: int = 100, png: bytes | None = None) -> str:
    """A ``<figure>`` with the Figure embedded as a base64 PNG (``data-name`` = ``name``).

    Pass ``png`` (from :func:`figure_png`) to embed bytes already rendered instead of rendering again.
    """
    data = base64.b64encode(png if png is not None else figure_png(fig, dpi)).decode("ascii")
    attr = f' data-name="{html.escape(name)}"' if name else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure{attr}><img alt="{html.escape(name or caption or "figure")}" src="data:image/png;base64,{data}">{cap}</figure>'


def fmt(v, digits: int = 4) -> str:
    """A table cell: ``digits`` significant digits (scientific when tiny or huge), "–" for None / NaN,
    yes / no for bools, escaped text otherwise."""
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits, len(str(int(abs(v)))) + 2)}g}"
    return html.escape(str(v))


def table_html(header, rows, raw_columns=()) -> str:
    """An HTML table; cells are formatted numbers or escaped text (columns in ``raw_columns`` are raw HTML)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td>{c if i in raw_columns else fmt(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return scrolling(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def scrolling(table: str) -> str:
    """``table`` (HTML) in a box that scrolls sideways, so that a wide table never widens the page."""
    return f'<div class="scroll">{table}</div>'


def render_html(title: str, sections) -> str:
    """A self-contained HTML page: ``sections`` is a list of ``(heading, html_body)``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    toc = "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>' for i, (h, _) in enumerate(sections))
    parts.append(f'<ul class="toc">{toc}</ul>')
    for i, (heading, body) in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(heading)}</h2>{body}</section>')
    parts.append("</body></html>")
    return "\n".join(parts)
