"""Fault catalogue, report outputs: names come from the user (dataset folders, model names, class names), and a
hostile one must not become markup in report.html (text or attribute, element ids included), markup in report.md,
or a formula in summary.csv."""

from __future__ import annotations

import csv
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from study_synth import SynthStudy  # noqa: E402

DATASET = 'd"><svg\tonload=alert(1)>'
MODELS = {"unet": "<img src=x onerror=alert(1)>", "segformer-b3": '=HYPERLINK("http://evil.example","x")',
          "unetplusplus": "-1+2"}
CLASSES = {"lesion": "@SUM(1+1)*cmd|' /C calc'!A0", "rim": "# *x* | [l](javascript:alert(1)) `y` $\\frac$"}

# what the renderers write themselves; anything else came from a name
HTML_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "nav", "a", "section", "ul", "li",
             "figure", "figcaption", "span", "img", "div", "table", "caption", "thead", "tbody", "tr", "th", "td"}
HTML_ATTRS = {"lang", "charset", "class", "id", "href", "alt", "src"}
MD_TAGS = {"h1", "h2", "p", "ul", "li", "em", "strong", "table", "thead", "tbody", "tr", "th", "td"}


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def elements(text: str) -> list[tuple[str, dict]]:
    parser = Elements()
    parser.feed(text)
    return parser.tags


def hostile_study(folder: Path) -> Path:
    """A one-dataset, one-fold study whose dataset, models and classes have hostile names, with Grad-CAM output
    for the unet cell (as `segdeploy cam` writes it, class names included)."""
    SynthStudy(datasets={"derm": ["lesion", "rim"]}, skills={"unet": 0.80, "segformer-b3": 0.78,
                                                             "unetplusplus": 0.75},
               folds=(0,), lrs=(1e-4,), n_images=12, cross={}).write(folder)
    rows = []
    for line in (folder / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        row["model"] = MODELS.get(row["model"], row["model"])
        for key in ("dataset", "train_dataset", "target"):
            row[key] = DATASET if row.get(key) == "derm" else row.get(key)
        row["study"]["model"], row["study"]["dataset"] = row["model"], DATASET
        if row.get("dice_per_class"):
            row["dice_per_class"] = {CLASSES[c]: v for c, v in row["dice_per_class"].items()}
        rows.append(json.dumps(row))
    (folder / "results.jsonl").write_text("\n".join(rows) + "\n")

    from PIL import Image

    cams = folder / "cams" / "unet"
    cams.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        image_id = f"derm_{i:03d}"
        name = re.sub(r"[^\w.-]+", "_", CLASSES["lesion"])  # as the Grad-CAM writer names its files
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(cams / f"{image_id}__{name}.png")
        images.append({"id": image_id, "dice": 0.3 + 0.1 * i, "selected_as": "worst",
                       "classes": {CLASSES["lesion"]: {"cam_energy_in_gt": 0.4, "gt_area_fraction": 0.1}}})
    (cams / "cam.json").write_text(json.dumps({
        "run": "/runs/unet-derm-f0-lr0.0001", "model": MODELS["unet"], "layer": "decoder.<b>", "images": images,
        "class_means": {CLASSES["lesion"]: {"n_images": 3, "cam_energy_in_gt": 0.4, "gt_area_fraction": 0.1}}}))
    return folder


@pytest.fixture(scope="module")
def hostile_report(tmp_path_factory) -> Path:
    from segdeploy.report.build import write_report

    study = hostile_study(tmp_path_factory.mktemp("hostile"))
    out = study / "report"
    write_report([study], out, n_resamples=100)
    return out


def test_hostile_names_inject_no_html_element_or_attribute(hostile_report):
    html = (hostile_report / "report.html").read_text(encoding="utf-8")
    tags = elements(html)
    assert {t for t, _ in tags} <= HTML_TAGS, {t for t, _ in tags} - HTML_TAGS
    assert {a for _, attrs in tags for a in attrs} <= HTML_ATTRS
    ids = [attrs["id"] for _, attrs in tags if "id" in attrs]
    assert all(re.fullmatch(r"[a-z0-9-]+", i) for i in ids), ids
    assert len(ids) == len(set(ids))
    assert {attrs["href"][1:] for t, attrs in tags if t == "a"} <= set(ids)
    # the names are there, as text: the Grad-CAM montage of the hostile model on the hostile dataset included
    assert any(t == "figure" and attrs["id"].startswith("fig-cam-") for t, attrs in tags)
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "onload=alert(1)&gt;" in html


def test_hostile_names_inject_no_markdown(hostile_report):
    from markdown_it import MarkdownIt

    md = (hostile_report / "report.md").read_text(encoding="utf-8")
    rendered = MarkdownIt("commonmark").enable("table").render(md)
    tags = elements(rendered)
    assert {t for t, _ in tags} <= MD_TAGS, {t for t, _ in tags} - MD_TAGS  # no <img>, <svg>, link or heading
    assert {a for _, attrs in tags for a in attrs} <= {"style"}  # table alignment only
    # every table row has as many cells as its header: a "|" in a name does not split a cell
    for table in re.findall(r"<table>.*?</table>", rendered, re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>.*?</tr>", table, re.S)}
        assert len(widths) == 1, table[:300]
    text = re.sub(r"<[^>]+>", "", rendered)
    assert MODELS["unet"].replace("<", "&lt;").replace(">", "&gt;") in text  # shown literally, not dropped
    assert "[l](javascript:alert(1))" in text


def test_summary_csv_has_no_formula_and_keeps_negative_numbers(hostile_report):
    with open(hostile_report / "summary.csv", newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    cells = [v for r in records for v in r.values()]
    risky = [v for v in cells if v[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert risky, "the study has negative numbers"
    for v in risky:
        float(v)  # only numbers may start with a formula character
    models = {r["model"] for r in records if r["model"]}
    assert {"'" + MODELS["segformer-b3"], "'-1+2", MODELS["unet"]} <= models
    assert "'" + DATASET not in {r["dataset"] for r in records} and DATASET in {r["dataset"] for r in records}
    assert any(r["quantity"] == f"dice[{CLASSES['lesion']}]"
               for r in records)
    delta = next(r for r in records if r["section"] == "comparison" and r["quantity"] == "delta")
    assert float(delta["value"]) < 0 and delta["value"].startswith("-")  # a negative number stays a number


def test_csv_cells_by_the_owasp_rule():
    from segdeploy.report.summary_csv import _cell

    assert [_cell(v) for v in ("=1+1", "+1+2", "-1+2", "@SUM(A1)", "\tx", "\rx", "-0.5", "+3", "1e-05", "-2.5e+03",
                               "a=b", "", None, -0.5)] == [
        "'=1+1", "'+1+2", "'-1+2", "'@SUM(A1)", "'\tx", "'\rx", "-0.5", "+3", "1e-05", "-2.5e+03", "a=b", "", "",
        "-0.5"]


def test_ids_are_slugs_and_colliding_names_stay_two_anchors():
    from segdeploy.report.document import Document, Paragraph, Section, to_html

    doc = Document("t", "s", [Section("a b", "one", [Paragraph("x")]), Section("a-b", "two", [Paragraph("y")]),
                              Section('Ünï"><b>', "three", [Paragraph("z")])])
    tags = elements(to_html(doc))
    ids = [attrs["id"] for t, attrs in tags if t == "section"]
    assert ids[0] == "a-b" and re.fullmatch(r"a-b-[0-9a-f]{6}", ids[1]) and ids[2] == "uni-b"
    assert [attrs["href"] for t, attrs in tags if t == "a"] == [f"#{i}" for i in ids]


def test_markdown_escapes_leading_block_syntax_and_links():
    from segdeploy.report.document import md_text

    assert md_text("1. first", block=True) == "1\\. first"
    assert md_text("# title\n===", block=True) == "\\# title ===" and md_text("> q", block=True) == "&gt; q"
    assert md_text("[x](javascript:alert(1)) a|b *c* d_e _f_") == "[x\\](javascript:alert(1)) a\\|b \\*c\\* d_e \\_f\\_"
    assert md_text("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"
    assert md_text("-0.5") == "-0.5" and md_text("-0.5", block=True) == "\\-0.5"
