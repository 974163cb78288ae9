"""``segdeploy models verify NAME|all``: each model's ONNX export against PyTorch, its size against the declared
one, and its ONNX Runtime CPU latency.

It uses the model registry, the exporter and the latency loop, so it sits above all three (``segdeploy.models``
imports none of them); the command is :mod:`segdeploy.commands.verify`.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from segdeploy.bench.latency import measure
from segdeploy.errors import SegdeployError, describe_error
from segdeploy.fileio import atomic_write_json
from segdeploy.machine import envinfo

VERIFY_BATCHES = (1, 3)  # the export's dummy batch is 2: both sizes prove the batch axis is dynamic
# ORT and PyTorch fp32 usually agree to ~1e-5; 1e-3 of the logit scale leaves room for different conv
# algorithms while catching a wrong graph. Pixels whose top two logits tie may flip class, hence 0.999.
VERIFY_REL_TOL = 1e-3
VERIFY_MIN_ARGMAX_AGREEMENT = 0.999
VERIFY_PARAMS_REL_TOL = 0.10  # a declared size holds when the built model is within ±10% of it
# a short loop after a warm-up: a figure to rank models by on this machine, not a benchmark (that is `bench`)
VERIFY_LATENCY_TIMING = dict(warmup_s=0.2, duration_s=1.0, min_iters=10)  # 10: p90 is supported
STATUS_STYLE = {"ok": "[green]ok[/]", "mismatch": "[bold red]mismatch[/]", "failed": "[bold red]failed[/]"}



def _params_check(name: str) -> dict:
    """Parameters of ``name`` at the declared configuration (512x512, 2 classes, built on the meta device)."""
    from segdeploy.models import count_params, model_info
    from segdeploy.models.profile import build_for_profile

    info = model_info(name)
    declared = info.params_m
    built = count_params(build_for_profile(name)) / 1e6
    ok = None if declared is None else abs(built - declared) <= VERIFY_PARAMS_REL_TOL * declared
    return {"params_m": built, "declared_params_m": declared, "params_ok": ok, "params_gap": info.params_gap or None}


def _ort_latency(onnx_file: Path, in_chans: int, img_size: int) -> dict:
    """Median and tail of fp32 ONNX Runtime (CPU EP, default threads) at batch 1, in milliseconds."""
    import numpy as np

    from segdeploy.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ort_session

    session = ort_session(onnx_file)
    x = np.random.default_rng(0).standard_normal((1, in_chans, img_size, img_size), dtype=np.float32)
    timing = measure(lambda: session.run([OUTPUT_NAME], {INPUT_NAME: x}), **VERIFY_LATENCY_TIMING)
    return {k: timing[k] for k in ("p50", "p90", "mean", "min", "max", "n")}


def _mismatch_reasons(result: dict) -> list[str]:
    reasons = []
    if result["params_ok"] is False and not result.get("params_gap"):  # a documented gap is reported, not failed
        reasons.append(f"built {result['params_m']:.2f}M params at 512x512, declared {result['declared_params_m']}M "
                       f"(more than ±{VERIFY_PARAMS_REL_TOL:.0%} off)")
    for b, c in result["batches"].items():
        limit = VERIFY_REL_TOL * max(1.0, c["ref_abs_max"])
        if c["max_abs_diff"] > limit:
            reasons.append(f"batch {b}: max |diff| {c['max_abs_diff']:.2e} > {limit:.2e}")
        if c["argmax_agreement"] < VERIFY_MIN_ARGMAX_AGREEMENT:
            reasons.append(f"batch {b}: argmax agreement {c['argmax_agreement']:.5f} < {VERIFY_MIN_ARGMAX_AGREEMENT}")
    return reasons


def verify_model(name: str, img_size: int = 256, num_classes: int = 3, in_chans: int = 3) -> dict:
    """Verify a freshly initialised ``name``: parameters against the declared count, GMACs at ``img_size``, ONNX
    export (fp32, dynamic batch) against PyTorch at batch 1 and 3, and ONNX Runtime CPU latency at batch 1.

    ``status`` is ``ok``, ``mismatch`` (parity or parameter count out of tolerance) or ``failed`` (the export
    failed); ``reason`` says why for the last two.
    """
    import tempfile

    import numpy as np
    import torch

    from segdeploy.export.onnx_export import ExportFailed, export_onnx, parity
    from segdeploy.models import create_model, model_info
    from segdeploy.models.profile import profile_model

    info = model_info(name)
    result = {"model": name, "family": info.family, "tiny_of": info.tiny_of, "status": None, "reason": None,
              "img_size": img_size, "num_classes": num_classes, "in_chans": in_chans,
              "tolerance": {"max_abs_diff_rel": VERIFY_REL_TOL, "min_argmax_agreement": VERIFY_MIN_ARGMAX_AGREEMENT,
                            "params_rel": VERIFY_PARAMS_REL_TOL}}
    result.update(_params_check(name))
    torch.manual_seed(0)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans, img_size=img_size).eval()
    compute = profile_model(model, in_chans, img_size)
    result.update(gmacs=compute["gmacs"], gflops=compute["gflops"])
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="segdeploy-verify-") as tmp:
        path = Path(tmp) / f"{name}.onnx"
        try:
            result.update(export_onnx(model, path, (in_chans, img_size, img_size)))
        except ExportFailed as e:
            return {**result, "status": "failed", "reason": e.message}
        checks = {}
        for b in VERIFY_BATCHES:
            check = parity(path, model, rng.standard_normal((b, in_chans, img_size, img_size), dtype=np.float32))
            check["ok"] = (check["max_abs_diff"] <= VERIFY_REL_TOL * max(1.0, check["ref_abs_max"])
                           and check["argmax_agreement"] >= VERIFY_MIN_ARGMAX_AGREEMENT)
            checks[str(b)] = check
        result["batches"] = checks
        result["latency_ms"] = _ort_latency(path, in_chans, img_size)
    reasons = _mismatch_reasons(result)
    return {**result, "status": "mismatch" if reasons else "ok", "reason": "; ".join(reasons) or None}


def verify_models(names: list[str], img_size: int = 256, num_classes: int = 3, in_chans: int = 3, *,
                  out: Path | None = None, console: Console | None = None) -> dict:
    """:func:`verify_model` for each of ``names``; a model that raises becomes a ``failed`` row with the reason
    and the others go on. With ``out``, the report is rewritten after every model, so an interrupted run keeps
    what it measured."""
    import os

    from segdeploy.models import model_info

    report = {"img_size": img_size, "num_classes": num_classes, "in_chans": in_chans,
              "host": {"cpu": envinfo.cpu_model(), "cpu_count": os.cpu_count(),
                       "onnxruntime": (envinfo.onnxruntime_info() or {}).get("version"),
                       "torch": envinfo.torch_info()["version"]},
              "summary": {}, "models": []}
    console = console or Console(stderr=True)
    with console.status("verifying") as status:
        for i, name in enumerate(names, 1):
            status.update(f"[{i}/{len(names)}] verifying {name} at {img_size}x{img_size}")
            try:
                row = verify_model(name, img_size=img_size, num_classes=num_classes, in_chans=in_chans)
            except Exception as e:  # one broken model must not stop the others: it becomes a row
                info = model_info(name)
                row = {"model": name, "family": info.family, "tiny_of": info.tiny_of, "status": "failed",
                       "reason": describe_error(e), "img_size": img_size}
            report["models"].append(row)
            report["summary"] = {s: sum(r["status"] == s for r in report["models"]) for s in STATUS_STYLE}
            if out is not None:
                atomic_write_json(out, report)
            console.print(f"{name}: {STATUS_STYLE[row['status']]}", highlight=False)
    return report


def select_models(name: str, tiny: bool | None) -> list[str]:
    """``name`` alone, or with ``all`` every registered model (``tiny``: only the -tiny configurations, or only
    the full ones); unknown names and empty selections are user errors."""
    from segdeploy.models import list_models, model_info

    if name != "all":
        if tiny is not None:
            raise SegdeployError("--tiny/--full select among all models.", fix="use `verify all` or drop the flag.")
        model_info(name)  # unknown names fail here, with the list of known ones
        return [name]
    names = [n for n in list_models() if tiny is None or (model_info(n).tiny_of is not None) == tiny]
    if not names:
        raise SegdeployError("no registered model matches the selection.", fix="drop --tiny/--full.")
    return names
