"""A report document (``segdeploy.report.document``) printed as rich text and tables, figures left out."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from segdeploy.report.document import Answers, Document, Figure, Paragraph, Table, _numeric_columns


def print_document(console: Console, doc: Document) -> None:
    console.print(f"[bold]{escape(doc.title)}[/]")
    console.print(escape(doc.subtitle), style="dim")
    for section in doc.sections:
        console.rule(f"[bold]{escape(section.title)}")
        for block in section.blocks:
            if isinstance(block, Answers):
                for _, text in block.items:
                    console.print(f"• {escape(text)}")
                console.print(escape(block.limitation), style="yellow")
            elif isinstance(block, Paragraph):
                console.print(escape(block.text), style="dim" if block.css == "note" else None)
            elif isinstance(block, Table):
                numeric = _numeric_columns(block)
                table = RichTable(title=escape(block.caption), title_justify="left", box=box.SIMPLE_HEAD)
                for name, num in zip(block.header, numeric):
                    table.add_column(escape(name), justify="right" if num else "left",
                                     overflow="fold", no_wrap=num)
                for row in block.rows:
                    table.add_row(*map(escape, row))
                console.print(table)
            elif isinstance(block, Figure):
                continue
