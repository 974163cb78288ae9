"""Results rows as rich tables, one per dataset (as Ultralytics ``benchmark`` prints one per format sweep):
what each deployment costs (size, latency, throughput, memory) and what it does to accuracy (Dice, and the
change against the reference row of ``segdeploy.records.References``: the same run's PyTorch fp32 row on the same
split, images and device kind). Configurations that did not run stay in the table as rows with their reason."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.markup import escape
from rich.table import Table

from segdeploy.records import BenchRow, References

REASON_WIDTH = 40


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _short(reason: str | None) -> str:
    text = " ".join((reason or "").split())
    return text if len(text) <= REASON_WIDTH else text[:REASON_WIDTH - 1] + "…"


def _title(dataset: str, rows: list[BenchRow]) -> str:
    ok = [r for r in rows if r.ok]
    parts = [f"split {rows[0].split}"]
    if ok:
        parts.append(f"{ok[0].n_images} images")
        parts.append("devices " + ", ".join(sorted({str(r.device) for r in ok})))
    parts.append(f"FPS at batch {rows[0].batch}, latency (host to host) and compute at batch 1")
    parts.append("Mem = peak memory above the process baseline")
    return f"{dataset} ({'; '.join(parts)})"


def render(rows: Iterable[BenchRow | Mapping]) -> list[Table]:
    """One table per dataset, rows in the given order."""
    by_dataset: dict[str, list[BenchRow]] = {}
    for r in map(BenchRow.coerce, rows):
        by_dataset.setdefault(str(r.dataset), []).append(r)

    tables = []
    for dataset, group in by_dataset.items():
        references = References(group)
        # the run name tells apart two runs of one model (e.g. two folds or learning rates)
        names_per_model: dict[str, set] = {}
        for r in group:
            names_per_model.setdefault(r.model, set()).add(r.run)
        unfinished = any(r.run_complete is False for r in group)
        table = Table(title=_title(dataset, group), title_justify="left",
                      caption="(unfinished): the run's training had not completed (model.json complete: false)"
                      if unfinished else None, caption_justify="left")
        # one line per row: reasons are cut short (the full text is in the results file)
        for col in ("Model", "Family", "Backend", "Precision"):
            table.add_column(col, no_wrap=True, min_width=min(len(col), 9))
        # energy only where some row measured it (NVML, tegrastats or RAPL), so CPU-VM tables stay narrow
        energy = any(r.energy_j_per_image is not None for r in group)
        # share of the probed GEMM peak (segdeploy env --probe) only where a probe exists
        roofline = any(r.roofline_fraction is not None for r in group)
        numeric = ["Size (MB)", "Dice", "ΔDice", "p50 ms", "p90 ms", "Compute ms", "FPS", "Mem MB"]
        for col in numeric + (["J/img"] if energy else []) + (["% peak"] if roofline else []):
            table.add_column(col, justify="right", no_wrap=True, min_width=max(len(col), 7))
        table.add_column("Status", no_wrap=True, overflow="ellipsis", max_width=REASON_WIDTH + 13)
        for r in group:
            model = str(r.model)
            if len(names_per_model[r.model]) > 1:
                model += f" ({r.run_name})"
            if r.run_complete is False:
                model = f"[yellow]{escape(model)} (unfinished)[/]"
            lat = r.latency_ms or {}
            compute = (r.compute_ms or {}).get("p50")
            cells = [
                model, str(r.family or "-"), str(r.backend), str(r.precision),
                _num(r.file_size_mb, ".1f"), _num(r.dice, ".4f"), _num(references.delta(r), "+.4f"),
                _num(lat.get("p50"), ".2f"), _num(lat.get("p90"), ".2f"), _num(compute, ".2f"),
                _num(r.throughput_ips, ".1f"), _num(r.peak_memory_delta_mb, ".0f"),
            ]
            if energy:
                cells.append(_num(r.energy_j_per_image, ".3f"))
            if roofline:
                cells.append(_num(None if r.roofline_fraction is None else 100 * r.roofline_fraction, ".0f"))
            cells.append("[green]ok[/]" if r.ok else f"[yellow]{r.status}[/]: {escape(_short(r.reason))}")
            table.add_row(*cells)
        tables.append(table)
    return tables
