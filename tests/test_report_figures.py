"""The report's figures read at a glance: labels that do not overlap once drawn, every precision in the cost
figure, a guard axis that a +887% bar does not stretch, fixed 0-1 scales for Dice, no plot of one or two x values."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.report import figures


def _point(model, family, dice, p50, precision="fp32", backend="onnxruntime", **kw):
    return {"model": model, "family": family, "backend": backend, "precision": precision, "dice": dice,
            "published": False, "p50_ms": p50, "memory_mb": kw.get("memory_mb"), "energy_j": None,
            "params_m": kw.get("params_m")}


def _texts(fig) -> list:
    return [t for ax in fig.axes for t in ax.texts if t.get_visible() and t.get_text().strip()]


def _overlaps(fig, texts) -> list[tuple[str, str]]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in texts]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


def test_pareto_labels_never_overlap_and_many_models_are_numbered_with_a_key():
    # 17 models whose published-like Dice share a few values: names on one row cannot all fit
    rng = np.random.default_rng(0)
    points = [_point(f"model-{i:02d}-with-a-long-name", "general" if i % 2 else "specialized",
                     float(rng.choice([0.89, 0.895, 0.9])), float(50 + 40 * i), params_m=20.0 + i)
              for i in range(17)]
    fig = figures.pareto_figure(points)
    texts = _texts(fig)
    assert texts and all(t.get_text().isdigit() for t in texts)  # numbers on the points ...
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    key = [t.get_text() for legend in legends for t in legend.get_texts() if t.get_text()[:2].strip().isdigit()]
    assert key[0].startswith(" 1  ") and len([k for k in key if "with-a-long-name" in k]) == 17  # ... and a key
    for ax in fig.axes:
        assert _overlaps(fig, [t for t in ax.texts if t.get_text().strip()]) == []

    few = [_point(m, f, d, ms, params_m=p) for m, f, d, ms, p in (
        ("unet", "specialized", 0.80, 40.0, 31.0), ("segformer-b3", "general", 0.84, 90.0, 47.0),
        ("hiformer-b", "specialized", 0.82, 60.0, 26.0), ("segnext-l", "general", 0.86, 120.0, 49.0))]
    fig = figures.pareto_figure(few)
    names = [t.get_text() for t in _texts(fig)]
    assert any("segformer-b3" in n for n in names)  # few models: named beside their points
    for ax in fig.axes:
        assert _overlaps(fig, [t for t in ax.texts if t.get_text().strip()]) == []


def test_a_cost_with_one_or_two_distinct_values_gets_no_plot():
    points = [_point(m, "general", d, ms, params_m=p) for m, d, ms, p in (
        ("a", 0.8, 10.0, 5.0), ("b", 0.82, 20.0, 5.0), ("c", 0.81, 30.0, 7.0))]
    fig = figures.pareto_figure(points)
    assert [ax.get_xlabel() for ax in fig.axes if ax.get_visible()] == ["p50 latency, batch 1 (ms), log scale"]
    assert figures.pareto_figure(points[:2]) is None
    assert figures.precision_figure([{**p, "p50_ms": 10.0 + (i == 1)} for i, p in enumerate(points)]) is None


def test_cost_figure_shows_every_precision_with_its_speed_up():
    entries = []
    for model, family, fp32 in (("unet", "specialized", 400.0), ("segformer-b3", "general", 150.0)):
        entries.append({"model": model, "family": family, "backend": "torch", "precision": "fp32", "p50_ms": fp32})
        for backend, int8_gain in (("onnxruntime", 2.5), ("openvino", 6.1)):
            entries.append({"model": model, "family": family, "backend": backend, "precision": "fp32",
                            "p50_ms": fp32 * 0.9})
            entries.append({"model": model, "family": family, "backend": backend, "precision": "int8",
                            "p50_ms": fp32 * 0.9 / int8_gain})
    fig = figures.precision_figure(entries)
    assert [ax.get_title().split()[0] for ax in fig.axes] == ["torch", "onnxruntime", "openvino"]
    assert sorted(t.get_text() for t in _texts(fig)) == ["int8 2.5×", "int8 2.5×", "int8 6.1×", "int8 6.1×"]
    markers = {h.get_marker(): h.get_label() for h in fig.legends[0].legend_handles if h.get_label() in
               ("fp32", "int8")}
    assert markers == {"o": "fp32", "^": "int8"}


def test_guard_axis_is_clipped_and_its_labels_clear_the_axis_labels():
    bars = [{"label": "unet-tiny · openvino int8", "family": "specialized", "relative": 8.87, "passes": True},
            {"label": "missformer-tiny · openvino int8", "family": "specialized", "relative": -0.254,
             "passes": False},
            {"label": "segformer-tiny · onnxruntime int8", "family": "general", "relative": -0.002, "passes": True}]
    fig = figures.guard_figure(bars)
    (ax,) = fig.axes
    assert ax.get_xlim() == pytest.approx(figures.GUARD_CLIP)  # not -29%..+1020%
    labels = {t.get_text() for t in _texts(fig)}
    assert labels == {"+887.00%", "-25.40%  FAIL", "-0.20%"}
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    plot = ax.get_window_extent(renderer)
    ticks = [t.get_window_extent(renderer) for t in ax.get_yticklabels()]
    for text in _texts(fig):
        box = text.get_window_extent(renderer)
        assert box.x0 > plot.x1 and not any(box.overlaps(t) for t in ticks), text.get_text()


def test_dice_scales_are_fixed_from_0_to_1():
    fig = figures.per_class_figure([("a", "general"), ("b", "specialized")], ["rv", "lv"],
                                   np.array([[0.74, 0.75], [0.80, 0.81]]))
    (image,) = fig.axes[0].images
    assert (image.norm.vmin, image.norm.vmax) == (0.0, 1.0)
    entries = [{"model": m, "family": f, "dice": d, "ci": (d - 0.01, d + 0.01), "fold_dice": [d], "published": None}
               for m, f, d in (("a", "general", 0.76), ("b", "specialized", 0.74))]
    fig = figures.dice_figure(entries, trivial=0.41)
    assert fig.axes[0].get_xlim() == (0.0, 1.0)
    assert any("not learned" in t.get_text() for t in fig.axes[0].get_legend().get_texts())
