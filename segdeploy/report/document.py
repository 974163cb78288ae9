"""A report as plain blocks (paragraphs, figures, tables in sections), rendered to one self-contained HTML file
(inline CSS, figures as data URIs, no JavaScript, no external resource) and to Markdown (text and tables only:
figures are named, not embedded, so a committed ``report.md`` carries no image).

Every string in a block is plain text, and names in it come from the user (datasets, models, classes, paths):
each renderer escapes all of it, in HTML (text and every attribute value through ``attr``; element ids slugged
to ``[a-z0-9-]`` and made unique) and in Markdown (``md_text``)."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import unicodedata
from dataclasses import dataclass, field


@dataclass
class Paragraph:
    text: str
    css: str = ""


@dataclass
class Answers:
    """The answer sentences, one per dataset (``items``: (dataset, text)), and what they cannot show."""
    items: list[tuple[str, str]]
    limitation: str


@dataclass
class Figure:
    id: str
    title: str  # the question the figure answers
    caption: str  # where and how it was measured
    data: bytes
    mime: str = "image/svg+xml"


@dataclass
class Table:
    id: str
    caption: str
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section]


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:1300px;margin:2em auto;
padding:0 1.5em;color:#1a1a1a;line-height:1.45;font-size:15px}
h1{font-size:1.7em;margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
.subtitle{color:#555} ul.answers{font-size:1.08em} ul.answers li{margin:.5em 0}
.limitation{background:#fff4e0;border-left:4px solid #E69F00;padding:.5em .8em}
figure{margin:1.5em 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{margin-bottom:.4em} figcaption .q{font-weight:600;font-size:1.05em;display:block}
figcaption .how{color:#555;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.88em} caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border-bottom:1px solid #e3e3e3;padding:.25em .6em;white-space:nowrap}
th{background:#f4f4f4} .num{text-align:right;font-variant-numeric:tabular-nums} .text{text-align:left}
td.wrap{white-space:normal;text-align:left;min-width:20em}
.note{color:#555;font-size:.92em} nav a{margin-right:1em} .scroll{overflow-x:auto}
"""


def attr(value) -> str:
    """The one escaping of an HTML attribute value (written between double quotes)."""
    return html.escape(str(value), quote=True)


def slug(*parts) -> str:
    """An id from names: ASCII lower-case letters and digits joined by single dashes (accents dropped, so
    "Ünï" -> "uni"); "x" when nothing is left."""
    text = unicodedata.normalize("NFKD", "-".join(map(str, parts))).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"


class _Ids:
    """The element ids of one document: slugged, and unique (a slug already taken gets a short hash of the name it
    came from, so "a b" and "a-b" stay two anchors)."""

    def __init__(self):
        self.taken: set[str] = set()

    def __call__(self, name: str) -> str:
        base = out = slug(name)
        n = 0
        while out in self.taken:
            out = f"{base}-{hashlib.sha256(f'{name}/{n}'.encode()).hexdigest()[:6]}"
            n += 1
        self.taken.add(out)
        return out


# Markdown: characters that start inline markup anywhere (code, emphasis, strike-through, table cells)
_MD_INLINE = re.compile(r"([\\`*~|])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# ... and what starts a block at the beginning of a line (heading, list, setext rule, link definition; a quote's
# ">" is already an entity)
_MD_LEADING = re.compile(r"^(?:[#+\-=\[]|\d+[.)])")


def md_text(text, *, block: bool = False) -> str:
    """``text`` as literal Markdown: one line (whitespace runs become one space), HTML special characters as
    entities (no tag or entity of the user's reaches a renderer), inline markup characters and "](" backslash-
    escaped (no link), and with ``block`` (a paragraph or list item) a leading "#", "-", "+", "=", "[" or "1."
    escaped too."""
    t = re.sub(r"\s+", " ", str(text)).strip()
    t = _MD_INLINE.sub(lambda m: "\\" + m.group(0), t)
    t = re.sub(r"\](?=[(\[])", r"\\]", html.escape(t, quote=False))
    if block and (m := _MD_LEADING.match(t)):
        t = t[:m.end() - 1] + "\\" + t[m.end() - 1:]
    return t


def _data_uri(fig: Figure) -> str:
    return f"data:{fig.mime};base64,{base64.b64encode(fig.data).decode('ascii')}"


def _is_number(text: str) -> bool:
    t = text.replace("±", "").replace("×", "").replace("%", "").replace("[", "").replace("]", "").replace(",", "")
    t = t.replace("−", "-").replace("+", "").replace(" ", "").replace(".", "", 1).replace("-", "")
    return t.isdigit() or text == "-"


def _numeric_columns(t: Table) -> list[bool]:
    """A column is right-aligned when every cell in it is a number (or '-')."""
    return [all(_is_number(row[i]) for row in t.rows if i < len(row)) and any(row[i] != "-" for row in t.rows)
            for i in range(len(t.header))]


def _html_table(t: Table, table_id: str) -> str:
    numeric = _numeric_columns(t)
    head = "".join(f'<th class="{attr("num" if numeric[i] else "text")}">{html.escape(h)}</th>'
                   for i, h in enumerate(t.header))
    body = []
    for row in t.rows:
        cells = []
        for i, cell in enumerate(row):
            css = "num" if numeric[i] else ("wrap" if len(cell) > 60 else "text")
            cells.append(f'<td class="{attr(css)}">{html.escape(cell)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    # a wide table (the environment card) scrolls inside its box instead of widening the whole page
    return (f'<div class="scroll"><table id="{attr(table_id)}"><caption>{html.escape(t.caption)}</caption><thead>'
            f"<tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _html_block(b, ids: _Ids) -> str:
    if isinstance(b, Paragraph):
        return f'<p class="{attr(b.css)}">{html.escape(b.text)}</p>' if b.css else f"<p>{html.escape(b.text)}</p>"
    if isinstance(b, Answers):
        items = "".join(f'<li id="{attr(ids(f"answer-{d}"))}">{html.escape(t)}</li>' for d, t in b.items)
        return f'<ul class="answers">{items}</ul><p class="limitation">{html.escape(b.limitation)}</p>'
    if isinstance(b, Figure):
        return (f'<figure id="{attr(ids(b.id))}"><figcaption><span class="q">{html.escape(b.title)}</span>'
                f'<span class="how">{html.escape(b.caption)}</span></figcaption>'
                f'<img alt="{attr(b.title)}" src="{attr(_data_uri(b))}"></figure>')
    if isinstance(b, Table):
        return _html_table(b, ids(b.id))
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(doc: Document) -> str:
    ids = _Ids()
    section_ids = [ids(s.id) for s in doc.sections]  # first, so that the navigation links to them
    nav = " ".join(f'<a href="#{attr(i)}">{html.escape(s.title)}</a>' for i, s in zip(section_ids, doc.sections))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(doc.title)}"
             f"</title><style>{CSS}</style></head><body><h1>{html.escape(doc.title)}</h1>"
             f'<p class="subtitle">{html.escape(doc.subtitle)}</p><nav>{nav}</nav>']
    for i, s in zip(section_ids, doc.sections):
        parts.append(f'<section id="{attr(i)}"><h2>{html.escape(s.title)}</h2>')
        parts.extend(_html_block(b, ids) for b in s.blocks)
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def to_markdown(doc: Document) -> str:
    out = [f"# {md_text(doc.title)}", "", md_text(doc.subtitle, block=True), ""]
    for s in doc.sections:
        out += [f"## {md_text(s.title)}", ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                out += [md_text(b.text, block=True), ""]
            elif isinstance(b, Answers):
                out += [f"- {md_text(t, block=True)}" for _, t in b.items] + ["", f"*{md_text(b.limitation)}*", ""]
            elif isinstance(b, Figure):
                out += [f"*Figure (in report.html): {md_text(b.title)}* — {md_text(b.caption)}", ""]
            elif isinstance(b, Table):
                numeric = _numeric_columns(b)
                out += [f"**{md_text(b.caption)}**", "", "| " + " | ".join(map(md_text, b.header)) + " |",
                        "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
                out += ["| " + " | ".join(map(md_text, row)) + " |" for row in b.rows]
                out.append("")
    return "\n".join(out).rstrip() + "\n"
