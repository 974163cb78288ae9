"""The study report: every expected figure is in report.html (inline, offline, no script), the headline numbers
equal summary.csv, the file stays under 5 MB; cost-only studies show the published Dice, labelled as such."""

from __future__ import annotations

import base64
import csv
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from study_synth import ENV_CPU, SynthStudy  # noqa: E402

from segdeploy.commands.app import app  # noqa: E402
from segdeploy.report.document import md_text  # noqa: E402
from segdeploy.numerics import sig3  # noqa: E402

MAX_BYTES = 5_000_000


class ReportParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.figures: dict[str, str] = {}  # figure id -> img src
        self.answers: dict[str, str] = {}  # li id -> text
        self.tags: set[str] = set()
        self.sources: list[str] = []
        self._figure = self._answer = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        if tag == "figure":
            self._figure = attrs["id"]
        elif tag == "img":
            self.sources.append(attrs["src"])
            if self._figure:
                self.figures[self._figure] = attrs["src"]
        elif tag == "li" and attrs.get("id", "").startswith("answer-"):
            self._answer = attrs["id"]
            self.answers[self._answer] = ""
        for key in ("href", "src"):
            if key in attrs and not attrs[key].startswith(("#", "data:")):
                self.sources.append(attrs[key])

    def handle_endtag(self, tag):
        if tag == "figure":
            self._figure = None
        elif tag == "li":
            self._answer = None

    def handle_data(self, data):
        if self._answer:
            self.answers[self._answer] += data


def parse(path: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def decoded(src: str) -> tuple[str, bytes]:
    match = re.match(r"data:([\w/+.-]+);base64,(.*)", src, re.S)
    assert match, src[:60]
    return match.group(1), base64.b64decode(match.group(2))


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def fake_cams(study_dir: Path, cells: list[tuple[str, str]]) -> None:
    """What `segdeploy cam` writes, for the reported lr's fold 0 runs; overlays are random noise pictures."""
    rng = np.random.default_rng(0)
    from PIL import Image

    for model, dataset in cells:
        folder = study_dir / "cams" / model / dataset
        folder.mkdir(parents=True)
        images = []
        for i in range(5):
            image_id = f"{dataset}_{i:03d}"
            Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / f"{image_id}__lesion.png")
            images.append({"id": image_id, "dice": 0.3 + 0.1 * i, "selected_as": "worst" if i < 4 else "random",
                           "classes": {"lesion": {"cam_energy_in_gt": 0.2 + 0.1 * i, "gt_area_fraction": 0.1,
                                                  "cam_max": 1.0}}})
        (folder / "cam.json").write_text(json.dumps({
            "run": f"/runs/{model}-{dataset}-f0-lr0.0001", "model": model, "layer": "decoder.block3",
            "images": images, "class_means": {"lesion": {"n_images": 5, "cam_energy_in_gt": 0.4,
                                                         "gt_area_fraction": 0.1}}}))


@pytest.fixture(scope="module")
def measured_report(tmp_path_factory):
    study = tmp_path_factory.mktemp("study")
    SynthStudy(n_images=30, folds=(0, 1, 2), lrs=(1e-4, 1e-5)).write(study)
    fake_cams(study, [("unet", "derm"), ("segformer-b3", "derm")])
    out = study / "report"
    result = CliRunner().invoke(app, ["report", str(study), "--out", str(out), "--resamples", "300"])
    assert result.exit_code == 0, result.output
    return study, out


def test_every_figure_is_inline_and_nothing_is_fetched(measured_report):
    _, out = measured_report
    html = out / "report.html"
    assert html.stat().st_size < MAX_BYTES
    parsed = parse(html)
    device = "cpu-synthetic-cpu-9000-2-cores"
    expected = {f"fig-dice-{d}" for d in ("derm", "cardio")}
    expected |= {f"fig-{kind}-{d}-{device}" for kind in ("pareto", "guard", "precision")
                 for d in ("derm", "cardio")}
    expected |= {"fig-classes-cardio", "fig-cam-derm-unet", "fig-cam-derm-segformer-b3"}
    expected |= {f"fig-curves-{d}" for d in ("derm", "cardio")}  # training progress, one panel per model
    assert set(parsed.figures) == expected
    for fig_id, src in parsed.figures.items():
        mime, data = decoded(src)
        if fig_id.startswith("fig-cam"):
            assert mime == "image/jpeg" and data[:2] == b"\xff\xd8"
        else:
            assert mime == "image/svg+xml" and b"<svg" in data[:2000] and len(data) > 5000
    assert "script" not in parsed.tags and "link" not in parsed.tags
    assert [s for s in parsed.sources if not s.startswith("data:")] == []


def test_headline_numbers_equal_summary_csv(measured_report):
    _, out = measured_report
    answers = parse(out / "report.html").answers
    records = read_summary(out / "summary.csv")
    assert set(answers) == {"answer-derm", "answer-cardio", "answer-all-datasets"}
    for dataset in ("derm", "cardio"):
        text = answers[f"answer-{dataset}"]
        m = re.search(r"best general (\S+) Dice ([\d.]+) ± ([\d.]+) vs best specialized (\S+) ([\d.]+) ± ([\d.]+), "
                      r"Δ ([+-][\d.]+) \[95% CI ([+-][\d.]+), ([+-][\d.]+)\], p (?:[=≤] ([\d.]+)|< 0\.001)", text)
        assert m, text
        comp = [r for r in records if r["section"] == "comparison" and r["dataset"] == dataset]
        get = lambda q, fam=None: next(r for r in comp if r["quantity"] == q and (fam is None or  # noqa: E731
                                                                                   r["family"] == fam))
        general, specialized = get("dice", "general"), get("dice", "specialized")
        assert m.group(1) == general["model"] and m.group(4) == specialized["model"]
        assert m.group(2) == f"{float(general['value']):.3f}"
        assert m.group(3) == f"{float(get('dice_std', 'general')['value']):.3f}"
        assert m.group(5) == f"{float(specialized['value']):.3f}"
        delta = get("delta")
        assert m.group(7) == f"{float(delta['value']):+.3f}"
        assert (m.group(8), m.group(9)) == (f"{float(delta['ci_low']):+.3f}", f"{float(delta['ci_high']):+.3f}")
        p = float(get("p_bootstrap")["value"])  # the primary p, dual to the CI
        assert (m.group(10) == f"{p:.3f}") if m.group(10) else p < 0.001
        # the accuracy section's numbers are the same ones
        acc = next(r for r in records if r["section"] == "accuracy" and r["dataset"] == dataset
                   and r["model"] == general["model"] and r["quantity"] == "dice_mean")
        assert float(acc["value"]) == pytest.approx(float(general["value"]))
        # the cost claims name front configurations with the cost table's latencies
        configs = re.findall(r"(\S+) \((\S+) (\w+)\) at ([\d.]+) ms", text)
        assert configs, text
        for model, backend, precision, ms in configs:
            p50 = next(r for r in records if r["section"] == "cost" and r["dataset"] == dataset
                       and r["model"] == model and r["backend"] == backend and r["precision"] == precision
                       and r["quantity"] == "p50_ms")
            assert ms == sig3(float(p50["value"]))
    sentences = {r["dataset"]: r["note"] for r in records if r["section"] == "answer"}
    assert sentences["derm"] == answers["answer-derm"]


def test_markdown_has_the_answers_tables_and_no_image(measured_report):
    _, out = measured_report
    md = (out / "report.md").read_text(encoding="utf-8")
    answers = parse(out / "report.html").answers
    for text in answers.values():
        assert f"- {md_text(text, block=True)}" in md
    assert "data:" not in md and "<img" not in md and "![" not in md
    assert "| model | family | lr | folds | Dice mean ± std |" in md
    assert "TensorRT is not installed" in md and "fp16 export produced NaN logits" in md  # failures listed


def test_summarize_prints_the_answer(measured_report):
    study, _ = measured_report
    result = CliRunner().invoke(app, ["study", "summarize", str(study), "--resamples", "200"],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "best general segformer-b3" in result.output and "Learning-rate choice" in result.output


def test_cost_only_study_shows_published_dice_labelled_as_such(tmp_path):
    lines = []
    for model, family, params in (("segformer-b3", "general", 47.0), ("unet", "specialized", 31.0),
                                  ("hiformer-b", "specialized", 26.0)):
        for precision, factor in (("fp32", 1.0), ("int8", 0.4)):
            lines.append({"model": model, "family": family, "dataset": "synthetic", "backend": "onnxruntime",
                          "precision": precision, "device": "cpu", "status": "ok", "dice": None,
                          "dice_status": "not measured", "split": "all", "n_images": 4, "batch": 8,
                          "latency_ms": {"p50": params * factor, "p99": params * factor * 1.2, "n": 20},
                          "throughput_ips": 100 / params, "peak_memory_delta_mb": params * 5 * factor,
                          "file_size_mb": params * 4 * factor, "params_m": params, "gmacs": params, "env": ENV_CPU,
                          "run": f"/runs/{model}", "run_name": model})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "results.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    parsed = parse(out / "report.html")
    assert set(parsed.answers) == {"answer-neopolyp", "answer-camus", "answer-isic2018"}
    neopolyp = parsed.answers["answer-neopolyp"]
    assert "published, not measured here" in neopolyp
    assert "best general segformer-b3 Dice 0.891 vs best specialized hiformer-b 0.846, Δ +0.045" in neopolyp
    # int8 has no Dice here, so the trade-off is made at fp32, whose Dice is the published one; within 0.01 of the
    # best only the general model remains, and below its latency the specialized front is the more accurate
    assert ("only the general family reaches Dice ≥ 0.881; its fastest is segformer-b3 (onnxruntime fp32) at 47 ms"
            in neopolyp), neopolyp
    assert "specialized from 26 ms, general from 47 ms" in neopolyp and "Borst & Kounev 2026" in neopolyp
    pareto = [f for f in parsed.figures if f.startswith("fig-pareto")]
    assert len(pareto) == 3
    # the Pareto plots hold fp32 only (published Dice is fp32's); int8's speed is in the cost figure
    assert [f for f in parsed.figures if f.startswith("fig-precision")] == ["fig-precision-synthetic-cpu-synthetic-"
                                                                           "cpu-9000-2-cores"]
    _, svg = decoded(parsed.figures[pareto[0]])
    assert b"<svg" in svg
    records = read_summary(out / "summary.csv")
    published = [r for r in records if r["section"] == "published"]
    assert len(published) == 9 and all("not measured here" in r["note"] for r in published)
    assert all(r["value"] == "" for r in records if r["section"] == "cost" and r["quantity"] == "dice")


def test_plain_bench_rows_without_sidecars_still_report(tmp_path):
    lines = []
    for model, family, dice in (("unet-tiny", "specialized", 0.61), ("segformer-tiny", "general", 0.64)):
        for backend, precision, d in (("torch", "fp32", 0.0), ("onnxruntime", "int8", -0.004)):
            lines.append({"model": model, "family": family, "dataset": "synthetic", "backend": backend,
                          "precision": precision, "device": "cpu", "status": "ok", "dice": dice + d,
                          "dice_per_class": {"a": dice + d, "b": dice + d}, "split": "test", "n_images": 4,
                          "batch": 8, "run": f"/runs/demo/{model}", "run_name": model,
                          "latency_ms": {"p50": 5.0, "p99": 9.0, "n": 10}, "peak_memory_delta_mb": 20.0,
                          "env": ENV_CPU})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    answer = parse(out / "report.html").answers["answer-synthetic"]
    assert "Δ +0.030" in answer and "no per-image sidecars" in answer
    assert "tiny configurations" in (out / "report.md").read_text(encoding="utf-8")


def test_montage_shows_a_class_that_has_a_map(tmp_path):
    from PIL import Image

    from segdeploy.report.cams import CamSet, montage_tiles

    for name in ("big", "small"):
        Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / f"a_1__{name}.png")
    summary = {"images": [{"id": "a 1", "dice": 0.2, "selected_as": "worst", "classes": {
        "big": {"cam_energy_in_gt": None, "gt_area_fraction": 0.5},  # predicted nowhere: an all-zero map
        "small": {"cam_energy_in_gt": 0.25, "gt_area_fraction": 0.1}}}]}
    (tile,) = montage_tiles(CamSet("d", "m", "general", None, tmp_path, summary))
    assert "(small)" in tile[1] and "CAM in GT 25%" in tile[1] and tile[0].shape == (40, 50, 3)


@pytest.mark.slow
def test_montages_are_dropped_before_the_html_passes_the_size_limit(measured_report, monkeypatch, tmp_path):
    from segdeploy.report import study_report
    from segdeploy.report.build import write_report

    study, _ = measured_report
    monkeypatch.setattr(study_report, "MAX_HTML_BYTES", 100_000)
    files = write_report([study], tmp_path / "small", n_resamples=200)
    figures = parse(files.html).figures
    assert figures and not any(f.startswith("fig-cam") for f in figures)


@pytest.mark.slow
def test_no_cam_images_keeps_the_cam_numbers_and_no_picture_of_the_data(measured_report, tmp_path):
    """--no-cam-images: the montages (pictures of the user's images) are left out, the CAM-in-mask shares stay
    as a table, in report.md too; the default report has the same table beside the montages."""
    study, out = measured_report
    result = CliRunner().invoke(app, ["report", str(study), "--out", str(tmp_path / "r"), "--resamples", "200",
                                      "--no-cam-images"])
    assert result.exit_code == 0, result.output
    parsed = parse(tmp_path / "r" / "report.html")
    assert parsed.figures and not any(f.startswith("fig-cam") for f in parsed.figures)
    assert not any(decoded(src)[0] == "image/jpeg" for src in parsed.sources)
    for report in (tmp_path / "r" / "report.md", out / "report.md"):
        rows = [line for line in report.read_text().splitlines() if line.startswith("| derm |")
                and "40% (10%)" in line]
        assert {line.split(" | ")[1] for line in rows} == {"unet", "segformer-b3"}, report


def test_cost_only_tables_have_no_dice_columns_plain_numbers_and_the_plain_op_note(tmp_path):
    """A cost-only study: no empty Dice/ΔDice/99% columns, latencies above 1000 ms as plain numbers (3 significant
    figures), and a model whose original CUDA operator runs here as plain ops is named beside the costs and in the
    limitations line."""
    lines = [{"model": model, "family": family, "dataset": "synthetic", "backend": "onnxruntime",
              "precision": "fp32", "device": "cpu", "status": "ok", "dice": None, "dice_status": "not measured",
              "split": "all", "n_images": 4, "batch": 1, "latency_ms": {"p50": p50, "p95": p50 * 1.02, "n": 20},
              "throughput_ips": 1000 / p50, "peak_memory_delta_mb": 5021.4, "file_size_mb": 240.0,
              "params_m": 58.0, "gmacs": 60.0, "env": ENV_CPU, "run": f"/runs/{model}", "run_name": model}
             for model, family, p50 in (("transnext-t-upernet", "general", 2436.03), ("unet", "specialized", 415.2))]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "results.jsonl"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text(encoding="utf-8")
    assert ("| model | family | backend | precision | p50 ms | p95 ms | img/s | memory MB | size MB | params M | GMACs "
            "| iters | threads | batch | load | timing |") in md
    assert "| transnext-t-upernet | general | onnxruntime | fp32 | 2440 | 2480 | 0.411 | 5020 | 240 |" in md
    assert "| 20 | - | 1 | - | - |" in md  # 20 iterations at batch 1; threads, load and noise not recorded
    assert "rows written before noise was judged" in md
    assert "e+0" not in md
    assert "transnext-t-upernet: aggregated attention (a CUDA kernel) as pad + shifted slices" in md
    assert "the cost of transnext-t-upernet is that of plain-PyTorch versions of their CUDA operators" in md
    assert "unet:" not in md
    assert "transnext-t-upernet (onnxruntime fp32) at 2440 ms" in md  # the front trade-off, plain numbers


def test_same_reason_failures_are_one_line_and_the_env_card_names_the_cpu_kernels(tmp_path):
    models = ("unet", "segformer-b3", "hiformer-b", "segnext-l")
    env = {**ENV_CPU, "cpu_isa": {"int8": "AMX-INT8", "bf16": "AMX-BF16", "fp16": None}}
    lines = []
    for i, model in enumerate(models):
        family = "general" if model.startswith("seg") else "specialized"
        lines.append({"model": model, "family": family, "dataset": "synthetic", "backend": "onnxruntime",
                      "precision": "fp32", "device": "cpu", "status": "ok", "dice": 0.8 + 0.01 * i, "split": "test",
                      "n_images": 4, "batch": 1, "latency_ms": {"p50": 10.0 + i, "p99": 11.0 + i, "n": 10},
                      "env": env, "run": f"/runs/{model}", "run_name": model})
        lines.append({"model": model, "family": family, "dataset": "synthetic", "backend": "torch",
                      "precision": "int8", "device": "cpu", "status": "unavailable", "reason": "torch int8 is not "
                      "benchmarked", "run": f"/runs/{model}", "run_name": model})
    lines.append({"model": "unet", "family": "specialized", "dataset": "synthetic", "backend": "openvino",
                  "precision": "int8", "device": "cpu", "status": "failed", "reason": "killed by SIGSEGV",
                  "run": "/runs/unet", "run_name": "unet"})
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = CliRunner().invoke(app, ["report", str(tmp_path / "results.jsonl"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "**5 configurations did not produce a measurement" in md
    assert "| all 4 models | synthetic | - | - | torch | int8 | cpu | unavailable | torch int8 is not benchmarked |" in md
    assert "| unet | synthetic | - | - | openvino | int8 | cpu | failed | killed by SIGSEGV |" in md
    assert "| Synthetic CPU 9000 | int8 AMX-INT8, bf16 AMX-BF16, fp16 - | 2 |" in md
