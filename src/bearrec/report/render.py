"""The report's blocks, ("h2" | "p" | "note" | "list" | "legend" | "table" | "figure", ...), rendered as one
self-contained HTML page or as Markdown."""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass


@dataclass
class FigureBlock:
    """A plot as a block: its PNG, the file name stem of the Markdown twin's copy, and its caption."""

    name: str
    png: bytes
    caption: str


def table_block(headers: list[str], rows: list[list[str]]) -> tuple:
    """A table block: header cells and rows of cells, all text."""
    return ("table", headers, rows)


def render_html(title: str, blocks: list[tuple]) -> str:
    """One self-contained page: styles inline, figures embedded as data: URIs, nothing fetched."""
    parts = []
    for block in blocks:
        kind = block[0]
        if kind == "h2":
            parts.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "note":
            parts.append(f'<p class="note">{html.escape(block[1])}</p>')
        elif kind == "list":
            parts.append("<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in block[1]) + "</ul>")
        elif kind == "legend":
            items = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape(meaning)}</li>"
                            for name, meaning in block[1])
            parts.append(f'<div class="legend">Columns:<ul>{items}</ul></div>')
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            # long cells (settings) may wrap; numbers stay on one line
            body = "".join("<tr>" + "".join(('<td class="long">' if len(c) > 40 else "<td>") + f"{html.escape(c)}</td>"
                                            for c in row) + "</tr>" for row in block[2])
            parts.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")
        elif kind == "figure":
            fig: FigureBlock = block[1]
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(fig.caption)}">'
                         f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    return _HTML_TEMPLATE.format(title=html.escape(title), body="\n".join(parts))


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a Markdown table; a | or line break inside a cell is escaped."""
    return (["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
            + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows])


def render_markdown(title: str, blocks: list[tuple], figure_files: dict[str, str]) -> str:
    """The Markdown twin; figures link to the PNG files named in `figure_files` (by figure name)."""
    lines = [f"# {title}", ""]
    for block in blocks:
        kind = block[0]
        if kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "note":
            lines += [f"> {block[1]}", ""]
        elif kind == "list":
            lines += [f"- {s}" for s in block[1]] + [""]
        elif kind == "legend":
            lines += ["Columns:"] + [f"- **{name}**: {meaning}" for name, meaning in block[1]] + [""]
        elif kind == "table":
            lines += md_table(block[1], block[2]) + [""]
        elif kind == "figure":
            fig: FigureBlock = block[1]
            lines += [f"![{fig.caption}]({figure_files[fig.name]})", "", f"*{fig.caption}*", ""]
    return "\n".join(lines)


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
*, *::before, *::after {{ box-sizing: border-box; }}
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }}
h1, h2, p, li, figcaption {{ overflow-wrap: anywhere; }}
.scroll {{ overflow-x: auto; max-width: 100%; margin: 0.5em 0 0.5em; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
td {{ white-space: nowrap; font-variant-numeric: tabular-nums; }}
td.long {{ white-space: normal; min-width: 24em; overflow-wrap: anywhere; }}
tbody tr:nth-child(even) {{ background: #fafafa; }}
.legend {{ color: #555; font-size: 0.85em; margin: 0 0 1.5em; }}
.legend ul {{ margin: 0.2em 0; padding-left: 1.5em; }}
figure {{ margin: 1em 0 2em; }}
img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ color: #555; font-size: 0.9em; }}
.note {{ color: #8a5a00; background: #fff8e6; border-left: 3px solid #e0a800; padding: 0.3em 0.8em; }}
</style>
</head>
<body>
<h1>{title}</h1>
{body}
<script>
(function () {{
  function check() {{
    var imgs = Array.prototype.slice.call(document.images);
    var ok = imgs.filter(function (i) {{ return i.complete && i.naturalWidth > 0; }}).length;
    document.body.setAttribute("data-images-loaded", ok + "/" + imgs.length);
    document.body.setAttribute("data-scroll-width", document.documentElement.scrollWidth);
    document.body.setAttribute("data-window-width", window.innerWidth);
  }}
  if (document.readyState === "complete") {{ check(); }} else {{ window.addEventListener("load", check); }}
}})();
</script>
</body>
</html>
"""
