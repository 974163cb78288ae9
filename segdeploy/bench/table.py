"""Results rows as rich tables, one per dataset (as Ultralytics ``benchmark`` prints one per format sweep):
what each deployment costs (size, latency, throughput, memory) and what it does to accuracy (Dice, and the
change against the reference row of ``segdeploy.rowkeys.References``: the same run's PyTorch fp32 row on the same
split, images and device kind), with what each timing rests on (timed iterations, threads, batch, host load), as
OpenVINO's benchmark_app prints them in its summary.

The table fits ``WIDTH`` (120) columns. Only measured configurations are rows: one that cannot run on this machine
is one line under the table ("not run here: torch fp16/int8 — needs CUDA ..."), a failed one a line with its
reason; a noisy row is marked and its reason is a line too, as is the note for a percentile left blank."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from rich import box
from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from segdeploy.bench.latency import PERCENTILE_MIN_N, supported
from segdeploy.numerics import fmt_num
from segdeploy.records import BenchRow
from segdeploy.rowkeys import References

WIDTH = 120
MISSING = "–"  # a figure that was not measured, or a percentile its sample does not support
TAIL = 95  # the tail percentile shown: the default loop (segdeploy.bench.latency.MIN_ITERS) supports it


def _title(dataset: str, rows: list[BenchRow]) -> str:
    ok = [r for r in rows if r.ok]
    parts = [f"split {rows[0].split}"]
    if ok:
        parts.append(f"{ok[0].n_images} images")
        parts.append("on " + ", ".join(sorted({str(r.device) for r in ok})))
    return f"{dataset} ({'; '.join(parts)})"


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def _why(row: BenchRow) -> str:
    """The reason without its configuration prefix ("torch fp16 needs CUDA" -> "needs CUDA") and fix (after
    "; "), with the precision written as {p} so that configurations failing alike group into one line."""
    reason = " ".join((row.reason or "").split())
    reason = re.sub(rf"^{re.escape(str(row.backend))}( {re.escape(str(row.precision))})?:?\s*", "", reason)
    reason = reason.split("; ")[0].removeprefix("is ")
    return reason.replace(str(row.precision), "{p}")


def not_run_lines(rows: Iterable[BenchRow], models: set[str]) -> list[str]:
    """One line per backend and reason for unavailable configurations, one per failed configuration."""
    groups: dict[tuple[str, str], dict[str, list]] = {}
    lines = []
    for r in rows:
        if r.status == "unavailable":
            g = groups.setdefault((str(r.backend), _why(r)), {"precisions": [], "models": []})
            g["precisions"] += [p for p in [str(r.precision)] if p not in g["precisions"]]
            g["models"] += [m for m in [str(r.model)] if m not in g["models"]]
        elif r.status == "failed":
            lines.append(f"failed: {r.model} {r.backend} {r.precision} — {' '.join((r.reason or '').split())}")
    unavailable = []
    for (backend, why), g in groups.items():
        which = "" if set(g["models"]) >= models else f" ({', '.join(g['models'])})"
        precisions = "/".join(g["precisions"])
        unavailable.append(f"not run here: {backend} {precisions}{which} — {why.replace('{p}', precisions)}")
    return [_one_line(line) for line in unavailable + lines]


def print_tables(rows: Iterable[BenchRow | Mapping], console=None) -> None:
    """Print ``render(rows)`` at ``WIDTH`` columns, whatever the terminal's width (a log gets the same)."""
    from rich.console import Console

    console = console or Console()
    for part in render(rows):
        console.print(part, width=WIDTH)


_SHARED_LABEL = {"Family": "family", "B": "batch", "thr": "threads", "Prec": "precision"}


def _natural_width(columns, body) -> int:
    widths = [max([len(name)] + [len(cells[i]) for cells, _ in body]) for i, (name, _) in enumerate(columns)]
    return sum(widths) + len(widths) - 1


def render(rows: Iterable[BenchRow | Mapping]) -> list[Group]:
    """One table per dataset (ok rows in the given order) with its notes below it."""
    by_dataset: dict[str, list[BenchRow]] = {}
    for r in map(BenchRow.coerce, rows):
        by_dataset.setdefault(str(r.dataset), []).append(r)
    return [_render_dataset(dataset, group) for dataset, group in by_dataset.items()]


def _render_dataset(dataset: str, group: list[BenchRow]) -> Group:
    references = References(group)
    ok = [r for r in group if r.ok]
    # the run name tells apart two runs of one model (e.g. two folds or learning rates)
    names_per_model: dict[str, set] = {}
    for r in ok:
        names_per_model.setdefault(r.model, set()).add(r.run)
    # GPU compute time only where CUDA events measured it (on the host it is the latency again); energy only where
    # some row measured it (NVML, tegrastats or RAPL); the share of the probed GEMM peak only where a probe exists
    compute = any(r.compute_timer == "cuda-events" for r in ok)
    energy = any(r.energy_j_per_image is not None for r in ok)
    roofline = any(r.roofline_fraction is not None for r in ok)
    columns: list[tuple[str, bool]] = [("Model", False), ("Family", False), ("Backend", False), ("Prec", False),
                                       ("Dice", True), ("ΔDice", True), ("p50 ms", True), (f"p{TAIL} ms", True)]
    columns += [("GPU ms", True)] * compute + [("img/s", True), ("Mem MB", True), ("Size", True)]
    columns += [("J/img", True)] * energy + [("% peak", True)] * roofline
    columns += [("iters", True), ("thr", True), ("B", True), ("load", True), ("", False)]  # "": the noisy mark

    notes, blank_tail, blank_memory, body = [], False, False, []
    for r in ok:
        model = str(r.model)
        if len(names_per_model[r.model]) > 1:
            model += f" ({r.run_name})"
        if r.run_complete is False:
            model += " (unfinished)"
        lat = r.latency_ms or {}
        tail = supported(lat, TAIL)
        blank_tail |= bool(lat) and tail is None
        blank_memory |= r.peak_memory_delta_mb is None and r.memory_note is not None
        threads = (r.engine_info or {}).get("threads", r.threads)
        cells = [model, str(r.family or MISSING), str(r.backend), str(r.precision),
                 fmt_num(r.dice, ".4f", MISSING), fmt_num(references.delta(r), "+.4f", MISSING),
                 fmt_num(lat.get("p50"), ".2f", MISSING), fmt_num(tail, ".2f", MISSING)]
        if compute:
            cells.append(fmt_num((r.compute_ms or {}).get("p50"), ".2f", MISSING))
        cells += [fmt_num(r.throughput_ips, ".1f", MISSING), fmt_num(r.peak_memory_delta_mb, ".0f", MISSING),
                  fmt_num(r.file_size_mb, ".1f", MISSING)]
        if energy:
            cells.append(fmt_num(r.energy_j_per_image, ".3f", MISSING))
        if roofline:
            cells.append(fmt_num(None if r.roofline_fraction is None else 100 * r.roofline_fraction, ".0f", MISSING))
        cells += [fmt_num(lat.get("n"), "d", MISSING), fmt_num(threads, "d", "auto"), fmt_num(r.batch, "d", MISSING),
                  fmt_num(r.host_load_1m, ".1f", MISSING), "noisy" if r.noisy else ""]
        body.append((cells, r.run_complete is False))
        if r.noisy:
            notes.append(f"noisy: {model} {r.backend} {r.precision} — {r.noisy_reason}")

    # wider than WIDTH (long names, a GPU's extra columns): a column with one value in every row goes to the title
    # ("all: batch 32, 16 thr"), then names wrap; numbers are never cut
    shared = []
    for name in ("Family", "B", "thr", "Prec"):
        if _natural_width(columns, body) <= WIDTH:
            break
        i = [c for c, _ in columns].index(name)
        values = {cells[i] for cells, _ in body}
        if len(values) == 1:
            shared.append(f"{_SHARED_LABEL[name]} {values.pop()}")
            columns.pop(i)
            for cells, _ in body:
                cells.pop(i)
    title = _title(dataset, group) + (f" — all rows: {', '.join(shared)}" if shared else "")
    # one space between columns and no outer edge: 17 columns fit 120 characters
    table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0))
    for name, numeric in columns:
        if numeric:
            table.add_column(name, justify="right", no_wrap=True)
        else:  # names may wrap onto a second line; they give way before any number does
            table.add_column(name, overflow="fold")
    for cells, unfinished in body:
        cells = [escape(c) for c in cells]
        if cells[-1]:
            cells[-1] = f"[yellow]{cells[-1]}[/]"
        table.add_row(*cells, style="yellow" if unfinished else None)

    lines = ["ms: batch 1, host to host; img/s: batch B; Mem: peak MB above the baseline; Size: file MB",
             "iters: timed batch-1 calls; thr: threads (auto: the runtime's default); B: batch; load: 1-min host "
             "load"]
    if blank_tail:
        lines.append(f"{MISSING} in p{TAIL}: p{TAIL} needs ≥ {PERCENTILE_MIN_N[TAIL]} timed iterations "
                     "(bench --min-iters)")
    if blank_memory:
        lines.append(f"{MISSING} in Mem: measured in a shared process (isolate none); only a process of its own "
                     "gives a configuration's memory")
    if any(r.run_complete is False for r in ok):
        lines.append("(unfinished): the run's training had not completed (model.json complete: false)")
    lines += notes + not_run_lines(group, {str(r.model) for r in group})
    parts = [table] if ok else [Text(_title(dataset, group), style="italic")]
    # notes wrap at the console's width (a noisy row's reasons in full); a failed row's reason is cut to one line
    # (the full text is in the results file)
    return Group(*parts, *(Text(line, style="dim") for line in lines))
