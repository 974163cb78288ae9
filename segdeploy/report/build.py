"""``write_report(inputs, out)``: load the results, compute the summary once, write ``report.html``, ``report.md``
``summary.csv`` and ``answer.json`` (``segdeploy.analysis.answer``) atomically into ``out``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from segdeploy.errors import SegdeployError
from segdeploy.analysis import stats

PUBLISHED_AUTO = "auto"


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    csv: Path
    html_bytes: int
    n_figures: int
    answer: Path | None = None


def resolve_published(choice: str | None, inputs: Sequence[Path]):
    """``auto``: a ``published.csv`` in a study folder, else the shipped reference-study table; ``none``: no
    published figures; ``borst2026``: the shipped table; anything else: a CSV path."""
    from segdeploy.analysis.published import SHIPPED_NAME, load_published

    choice = choice or PUBLISHED_AUTO
    if choice == "none":
        return []
    if choice == PUBLISHED_AUTO:
        local = [p / "published.csv" for p in inputs if p.is_dir() and (p / "published.csv").is_file()]
        return load_published(local[0] if local else None)
    return load_published(None if choice == SHIPPED_NAME else Path(choice))


def cam_section(folders: Sequence[Path], summary, *, images: bool = True):
    """The Grad-CAM section, or None when no ``cam.json`` of a reported run is under the study folders: a table of
    the CAM energy inside the ground truth per model and class (numbers only), then, with ``images``, a montage of
    each model's worst test images. ``images=False`` leaves the montages out, so the report carries no picture of
    the data (for data whose licence forbids passing its images on)."""
    from segdeploy.report import figures
    from segdeploy.report.cams import cam_share_rows, class_share_text, find_cams, montage_tiles
    from segdeploy.report.document import Figure, Paragraph, Section, Table, slug
    from segdeploy.analysis.aggregate import chosen

    chosen_cells = {r.cell for r in chosen(summary.rows, summary.choices)}
    cams, notes = find_cams(folders, summary.rows, chosen_cells)
    blocks = []
    header, rows = cam_share_rows(cams)
    if rows:
        blocks.append(Table("table-cam-share", "Grad-CAM energy inside the ground truth, mean over each model's worst "
                            "test images (one fold), per class; in brackets the class's share of the image area, "
                            "which a uniform map would get", header, rows))
    for cam in cams if images else ():
        tiles = montage_tiles(cam)
        if not tiles:
            continue
        fold = f" (fold {cam.fold})" if cam.fold is not None else ""
        fig = figures.cam_montage(tiles, f"{cam.model} on {cam.dataset}{fold}: worst test images")
        blocks.append(Figure(f"fig-cam-{slug(cam.dataset, cam.model)}",
                             f"{cam.dataset}, {cam.model}: where does the model look when it fails?",
                             f"Grad-CAM (layer {cam.summary.get('layer')}; white = ground truth, magenta = "
                             f"prediction). CAM energy inside the ground truth, mean over the drawn images: "
                             f"{class_share_text(cam)}.", figures.to_jpeg(fig), "image/jpeg"))
    if cams and not images:
        blocks.append(Paragraph("Montages of the images left out (report written with --no-cam-images).", "note"))
    blocks += [Paragraph(n, "note") for n in notes]
    if not blocks:
        return None
    return Section("gradcam", "Grad-CAM of the worst test images", blocks)


def write_report(inputs: Sequence[str | Path], out: str | Path, *, published: str | None = PUBLISHED_AUTO,
                 n_resamples: int = stats.N_RESAMPLES, seed: int = 0, cam_images: bool = True) -> ReportFiles:
    from segdeploy.fileio import atomic_write_text
    from segdeploy.report.document import Figure, to_html, to_markdown
    from segdeploy.report.study_report import MAX_HTML_BYTES, build_document
    from segdeploy.report.summary_csv import summary_records, to_csv
    from segdeploy.analysis.rows import load_rows, results_files
    from segdeploy.analysis.answer import write_answer
    from segdeploy.analysis.answer import answers
    from segdeploy.analysis.summary import summarize

    inputs = [Path(p) for p in inputs]
    files = results_files(inputs)
    rows = load_rows(inputs)
    summary = summarize(rows, resolve_published(published, inputs), n_resamples=n_resamples, seed=seed)
    folders = list(dict.fromkeys(p if p.is_dir() else p.parent for p in inputs))
    doc = build_document(summary, files, cam_section(folders, summary, images=cam_images))
    html = to_html(doc)
    if len(html.encode()) > MAX_HTML_BYTES:
        # montages are the only large part: drop them rather than write a report that will not be opened
        for section in doc.sections:
            section.blocks = [b for b in section.blocks if not (isinstance(b, Figure) and b.mime == "image/jpeg")]
        html = to_html(doc)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegdeployError("the output path is a file.", path=out, fix="pass a folder to --out.")
    html_path = atomic_write_text(out / "report.html", html)
    md_path = atomic_write_text(out / "report.md", to_markdown(doc))
    csv_path = atomic_write_text(out / "summary.csv", to_csv(summary_records(summary, answers(summary))))
    answer_path = write_answer(out / "answer.json", summary)
    n_figures = sum(isinstance(b, Figure) for s in doc.sections for b in s.blocks)
    return ReportFiles(html_path, md_path, csv_path, len(html.encode()), n_figures, answer_path)
