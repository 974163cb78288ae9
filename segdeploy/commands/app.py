"""``segdeploy`` command line: one sub-command per stage, mirroring the Python API.

Sub-command modules import their heavy dependencies inside the command functions, so ``--help`` is fast
and a missing optional backend only matters to the command that needs it.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings

import typer
from rich.console import Console
from typer.core import TyperGroup

from segdeploy.errors import SegdeployError, SegdeployWarning

# a write that failed for one of these reasons is the machine's state, not a bug: one line, no traceback
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _show_warning(message, category, filename, lineno, file=None, line=None, _default=warnings.showwarning):
    if issubclass(category, SegdeployWarning):
        Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    else:
        _default(message, category, filename, lineno, file, line)


class _Group(TyperGroup):
    """A SegdeployError from any sub-command becomes one red line and exit code 2 (no traceback), and so does
    a write that failed because the disk is full or read-only; a SegdeployWarning is one yellow line; Ctrl-C
    says that finished work is kept."""

    def invoke(self, ctx):
        if not sys.stdout.isatty():
            # logs and CI: rich would wrap tables at 80 columns and fold file names; the bench table with
            # its energy column and a cut reason is about 240 wide
            os.environ.setdefault("COLUMNS", "240")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("always", SegdeployWarning)
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except SegdeployError as e:
            Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            ctx.exit(2)
        except OSError as e:
            if e.errno not in _WRITE_ERRNOS:
                raise
            from segdeploy.fileio import write_failed

            Console(stderr=True).print(f"[bold red]error:[/] {write_failed(e.filename or '?', e)}", highlight=False,
                                       soft_wrap=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            Console(stderr=True).print("[yellow]interrupted[/]: completed work is saved; re-run the same command "
                                       "(with --resume for training) to continue.")
            ctx.exit(130)


app = typer.Typer(name="segdeploy", cls=_Group, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False, help="Accuracy and deployment cost of medical image segmentation models.")


def _register() -> None:
    from segdeploy.commands.bench import bench
    from segdeploy.commands.data import app as data_app
    from segdeploy.commands.demo import demo
    from segdeploy.commands.engines import app as engines_app
    from segdeploy.commands.env import env
    from segdeploy.commands.export import export
    from segdeploy.commands.models import app as models_app
    from segdeploy.commands.report import check, report
    from segdeploy.commands.study import app as study_app
    from segdeploy.commands.study_run import init as study_init
    from segdeploy.commands.study_run import run as study_run
    from segdeploy.commands.train import train
    from segdeploy.commands.verify import verify
    from segdeploy.commands.cam import cam

    models_app.command()(verify)  # segdeploy models verify: above models, export and bench, so not in models/
    study_app.command("init")(study_init)  # segdeploy study init / run: running a study, beside summarize
    study_app.command("run")(study_run)
    app.add_typer(data_app, name="data")
    app.add_typer(models_app, name="models")
    app.command()(train)
    app.command()(export)
    app.add_typer(engines_app, name="engines")
    app.command()(bench)
    app.command()(cam)
    app.command()(check)
    app.command()(report)
    app.add_typer(study_app, name="study")
    app.command()(env)
    app.command()(demo)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
