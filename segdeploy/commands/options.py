"""Options several commands share, defined once: ``device: Device = BENCH.device`` in a command's signature gives
it the same flag, check and help text as every other command taking a device.

Names, defaults and help texts are the settings records' (:class:`segdeploy.bench.config.BenchConfig`,
:class:`segdeploy.train.config.TrainConfig`); this module only adds how the command line spells and checks them.
The option name comes from the parameter (``batch`` -> ``--batch``), so a command keeps its own spelling."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from segdeploy.bench.config import BenchConfig
from segdeploy.commands.util import number_option
from segdeploy.records import key_default, key_help
from segdeploy.train.config import TrainConfig

BENCH = BenchConfig()  # the defaults: ``duration: Duration = BENCH.duration``


def _bench(name: str, *decls: str, **kw: Any) -> Any:
    return typer.Option(*decls, help=key_help(BenchConfig, name), **kw)


def train_option(name: str, *decls: str, **kw: Any) -> Any:
    """``segdeploy train``'s option for TrainConfig field ``name``: its default and help text."""
    return typer.Option(key_default(TrainConfig, name), *decls, help=key_help(TrainConfig, name), **kw)


Device = Annotated[str, _bench("device")]
Duration = Annotated[float, _bench("duration", callback=number_option("--duration"))]
MinIters = Annotated[int, _bench("min_iters", "--min-iters", min=1)]
Warmup = Annotated[float, _bench("warmup", callback=number_option("--warmup"))]
WarmupIters = Annotated[int, _bench("warmup_iters")]
BenchBatch = Annotated[int, _bench("batch")]
Threads = Annotated[Optional[int], _bench("threads", "--threads", min=1)]
Isolate = Annotated[str, _bench("isolate")]
Timeout = Annotated[Optional[float], _bench("timeout", "--timeout", callback=number_option("--timeout", positive=True))]
