"""Results rows as rich tables, one per dataset (as Ultralytics ``benchmark`` prints one per format sweep):
what each deployment costs (size, latency, throughput, memory) and what it does to accuracy (Dice, and the
change against the same run's PyTorch fp32 row). Configurations that did not run stay in the table as rows with
their reason."""

from __future__ import annotations

from collections.abc import Iterable

from rich.markup import escape
from rich.table import Table

REASON_WIDTH = 40


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _short(reason: str | None) -> str:
    text = " ".join((reason or "").split())
    return text if len(text) <= REASON_WIDTH else text[:REASON_WIDTH - 1] + "…"


def _reference_dice(rows: list[dict]) -> dict[str, float]:
    """run -> Dice of its torch fp32 row, else of its first fp32 row that ran, for the ΔDice column."""
    ref: dict[str, float] = {}
    ok32 = [r for r in rows if r.get("status") == "ok" and r.get("precision") == "fp32" and r.get("dice") is not None]
    for r in ok32:
        if r.get("backend") == "torch":
            ref.setdefault(r["run"], r["dice"])
    for r in ok32:
        ref.setdefault(r["run"], r["dice"])
    return ref


def _title(dataset: str, rows: list[dict]) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    parts = [f"split {rows[0].get('split')}"]
    if ok:
        parts.append(f"{ok[0].get('n_images')} images")
        parts.append("devices " + ", ".join(sorted({str(r.get("device")) for r in ok})))
    parts.append(f"FPS at batch {rows[0].get('batch')}, latency (host to host) and compute at batch 1")
    parts.append("Mem = peak memory above the process baseline")
    return f"{dataset} ({'; '.join(parts)})"


def render(rows: Iterable[dict]) -> list[Table]:
    """One table per dataset, rows in the given order."""
    by_dataset: dict[str, list[dict]] = {}
    for r in rows:
        by_dataset.setdefault(str(r.get("dataset")), []).append(r)

    tables = []
    for dataset, group in by_dataset.items():
        ref = _reference_dice(group)
        # the run name tells apart two runs of one model (e.g. two folds or learning rates)
        names_per_model: dict[str, set] = {}
        for r in group:
            names_per_model.setdefault(r.get("model"), set()).add(r.get("run"))
        unfinished = any(r.get("run_complete") is False for r in group)
        table = Table(title=_title(dataset, group), title_justify="left",
                      caption="(unfinished): the run's training had not completed (model.json complete: false)"
                      if unfinished else None, caption_justify="left")
        # one line per row: reasons are cut short (the full text is in the results file)
        for col in ("Model", "Family", "Backend", "Precision"):
            table.add_column(col, no_wrap=True, min_width=min(len(col), 9))
        # energy only where some row measured it (NVML, tegrastats or RAPL), so CPU-VM tables stay narrow
        energy = any(r.get("energy_j_per_image") is not None for r in group)
        numeric = ["Size (MB)", "Dice", "ΔDice", "p50 ms", "p90 ms", "Compute ms", "FPS", "Mem MB"]
        for col in numeric + (["J/img"] if energy else []):
            table.add_column(col, justify="right", no_wrap=True, min_width=max(len(col), 7))
        table.add_column("Status", no_wrap=True, overflow="ellipsis", max_width=REASON_WIDTH + 13)
        for r in group:
            model = str(r.get("model"))
            if len(names_per_model[r.get("model")]) > 1:
                model += f" ({r.get('run_name')})"
            if r.get("run_complete") is False:
                model = f"[yellow]{escape(model)} (unfinished)[/]"
            ok = r.get("status") == "ok"
            lat = r.get("latency_ms") or {}
            delta = None
            if ok and r.get("dice") is not None and r.get("run") in ref:
                delta = r["dice"] - ref[r["run"]]
            compute = (r.get("compute_ms") or {}).get("p50")
            cells = [
                model, str(r.get("family") or "-"), str(r.get("backend")), str(r.get("precision")),
                _num(r.get("file_size_mb"), ".1f"), _num(r.get("dice"), ".4f"), _num(delta, "+.4f"),
                _num(lat.get("p50"), ".2f"), _num(lat.get("p90"), ".2f"), _num(compute, ".2f"),
                _num(r.get("throughput_ips"), ".1f"), _num(r.get("peak_memory_delta_mb"), ".0f"),
            ]
            if energy:
                cells.append(_num(r.get("energy_j_per_image"), ".3f"))
            cells.append("[green]ok[/]" if ok else f"[yellow]{r.get('status')}[/]: {escape(_short(r.get('reason')))}")
            table.add_row(*cells)
        tables.append(table)
    return tables
