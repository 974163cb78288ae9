"""``segdeploy`` command line: one sub-command per stage, mirroring the Python API.

Sub-command modules import their heavy dependencies inside the command functions, so ``--help`` is fast
and a missing optional backend only matters to the command that needs it.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from segdeploy.errors import SegdeployError

app = typer.Typer(name="segdeploy", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Accuracy and deployment cost of medical image segmentation models.")


def _register() -> None:
    from segdeploy.bench.cli import bench
    from segdeploy.data.cli import app as data_app
    from segdeploy.demo import demo
    from segdeploy.engines.cli import app as engines_app
    from segdeploy.envinfo import env
    from segdeploy.export.cli import export
    from segdeploy.models.cli import app as models_app
    from segdeploy.report.cli import check
    from segdeploy.train.cli import train
    from segdeploy.xai.cli import cam

    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")
    app.command()(train)
    app.command()(export)
    app.add_typer(engines_app, name="engines")
    app.command()(bench)
    app.command()(cam)
    app.command()(check)
    app.command()(env)
    app.command()(demo)


_register()


def main() -> None:
    try:
        app()
    except SegdeployError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/]: completed work is saved; re-run the same command "
                                   "(with --resume for training) to continue.")
        sys.exit(130)


if __name__ == "__main__":
    main()
