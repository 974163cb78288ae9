"""``segdeploy env``: the environment record (:mod:`segdeploy.machine.envinfo`) as a table or JSON."""

from __future__ import annotations

from typing import Any

import typer


def _flatten(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flatten(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "; ".join(_flatten(v) for v in value) or "-"
    return str(value)


def env(format: str = typer.Option("table", "--format", help="table or json"),
        probe: bool = typer.Option(False, "--probe", help="Also measure this machine's fp32/int8 GEMM peaks and "
                                   "copy bandwidth (seconds), cached for bench's roofline_fraction."),
        probe_device: str = typer.Option("cpu", "--probe-device", help="cpu, or cuda[:N] for a GPU.")) -> None:
    """Show the machine and software versions that results are recorded with."""
    from segdeploy.commands.util import check_format
    from segdeploy.machine.envinfo import environment
    from segdeploy.fileio import dumps

    check_format(format)
    info = environment()
    if probe:
        from segdeploy.machine.roofline import probe as run_probe

        info["probe"] = run_probe(probe_device)
    if format == "json":
        typer.echo(dumps(info, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="segdeploy environment", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in info.items():
        table.add_row(key, _flatten(value))
    Console().print(table)
