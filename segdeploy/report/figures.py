"""The study report's figures (matplotlib, Agg), each returned as SVG or JPEG bytes for a data URI.

One colour per family everywhere (Okabe–Ito, colour-blind safe), one marker per precision (so a grey print still
reads), measured points filled and published ones hollow, dominated configurations faded, models labelled next
to their points (``adjustText`` moves labels off each other).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

FAMILY_COLOURS = {"general": "#E69F00", "specialized": "#0072B2", "baseline": "#009E73"}
OTHER_COLOUR = "#CC79A7"
RULE_COLOUR = "#D55E00"  # vermillion: the 99% rule line and failing bars
PRECISION_MARKERS = {"fp32": "o", "fp16": "s", "bf16": "D", "int8": "^"}
BASE_FONT = 10


def family_colour(family: str) -> str:
    return FAMILY_COLOURS.get(family, OTHER_COLOUR)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # names come from the user: "$...$" in one is text, not a mathtext formula that fails to parse
    plt.rcParams.update({"font.size": BASE_FONT, "axes.titlesize": BASE_FONT + 1, "axes.labelsize": BASE_FONT,
                         "legend.fontsize": BASE_FONT - 1, "svg.fonttype": "path", "svg.hashsalt": "segdeploy",
                         "axes.spines.top": False, "axes.spines.right": False, "text.parse_math": False})
    return plt


def to_svg(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return buf.getvalue()


def to_jpeg(fig, dpi: int = 100) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, bbox_inches="tight", pil_kwargs={"quality": 80})
    plt.close(fig)
    return buf.getvalue()


def _label(ax, texts: list, x=None, y=None, objects=None) -> None:
    """Move labels off each other, off the points (x, y) and off ``objects`` (e.g. the front line)."""
    if len(texts) > 1:
        from adjustText import adjust_text

        # points of a cost-only study share a few published Dice values, so labels start on one row: push them
        # apart harder and let them travel further than adjustText's defaults
        adjust_text(texts, x=x, y=y, objects=objects, ax=ax, expand=(1.15, 1.6), max_move=None,
                    force_text=(0.3, 0.6), force_static=(0.2, 0.4), iter_lim=1000,
                    arrowprops=dict(arrowstyle="-", color="#777777", lw=0.5))


def dice_figure(entries: Sequence[dict], trivial: float | None = None):
    """Dice per model: mean over folds (family colour) with its 95% bootstrap CI, each fold as a grey dot behind,
    the published value as a hollow marker, on the whole 0-1 axis (an auto-scaled axis makes 0.74 vs 0.76 look
    like a ranking). ``trivial``: the Dice of the best trivial predictor on the same test split, drawn as a grey
    band "not learned" from 0. ``entries``: dicts with model, family, dice, ci (low, high) or None, fold_dice,
    published (float or None), sorted best first."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(entries) + 1.4))
    if trivial is not None:
        ax.axvspan(0, trivial, color="#bbbbbb", alpha=0.35, lw=0, zorder=0)
    y = np.arange(len(entries))[::-1]
    for yi, e in zip(y, entries):
        colour = family_colour(e["family"])
        folds = [d for d in e["fold_dice"] if d is not None]
        ax.scatter(folds, np.full(len(folds), yi) + np.linspace(-0.12, 0.12, len(folds)), s=14, color="#999999",
                   alpha=0.7, zorder=2, label="fold" if yi == y[0] else None)
        if e.get("ci") and e["ci"][0] is not None:
            lo, hi = e["ci"]
            ax.errorbar(e["dice"], yi, xerr=[[e["dice"] - lo], [hi - e["dice"]]], fmt="none", ecolor=colour,
                        elinewidth=1.6, capsize=4, zorder=3)
        ax.scatter([e["dice"]], [yi], s=60, color=colour, edgecolor="black", linewidth=0.6, zorder=4)
        if e.get("published") is not None:
            ax.scatter([e["published"]], [yi], s=70, facecolor="none", edgecolor=colour, linewidth=1.6, zorder=4,
                       marker="D")
    ax.set_yticks(y, [e["model"] for e in entries])
    for tick, e in zip(ax.get_yticklabels(), entries):
        tick.set_color(family_colour(e["family"]))
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice (mDSC, micro over test images)")
    ax.grid(axis="x", alpha=0.3)
    handles = _family_handles(plt, {e["family"] for e in entries})
    handles.append(plt.Line2D([], [], ls="none", marker="o", color="#999999", label="one fold"))
    handles.append(plt.Line2D([], [], color="#444444", marker="|", ls="-", label="95% bootstrap CI"))
    if trivial is not None:
        from matplotlib.patches import Patch

        handles.append(Patch(color="#bbbbbb", alpha=0.35, label=f"not learned (≤ trivial predictor, {trivial:.3f})"))
    if any(e.get("published") is not None for e in entries):
        handles.append(plt.Line2D([], [], ls="none", marker="D", mfc="none", mec="#444444",
                                  label="published, not measured here"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=min(len(handles), 5), frameon=False)
    return fig


def _family_handles(plt, families) -> list:
    return [plt.Line2D([], [], ls="none", marker="o", color=family_colour(f), mec="black", mew=0.5, label=f)
            for f in sorted(families)]


def _precision_handles(plt, precisions) -> list:
    return [plt.Line2D([], [], ls="none", marker=PRECISION_MARKERS.get(p, "X"), color="#555555", label=p)
            for p in sorted(precisions, key=lambda p: list(PRECISION_MARKERS).index(p)
                            if p in PRECISION_MARKERS else 99)]


PARETO_AXES = (("p50_ms", "p50 latency, batch 1 (ms)"), ("memory_mb", "peak memory above baseline (MB)"),
               ("energy_j", "energy per image (J)"), ("params_m", "parameters (M)"))


def _merge_same_spot(points: Sequence[dict], key: str) -> list[dict]:
    """Configurations of one model and precision at the same cost and Dice (e.g. every backend has the same
    parameter count) become one point whose label names all their backends."""
    merged: dict[tuple, dict] = {}
    for p in points:
        spot = (p["model"], p["precision"], p["published"], round(float(p[key]), 9), round(float(p["dice"]), 9))
        if spot in merged:
            backends = merged[spot]["backend"].split(", ")
            if p["backend"] not in backends:
                merged[spot] = {**merged[spot], "backend": ", ".join(sorted([*backends, p["backend"]]))}
        else:
            merged[spot] = dict(p)
    return list(merged.values())


def _plain_log_axis(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    # 1-2-5 ticks over up to two decades; beyond that they run into each other ("5001000")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if high / max(low, 1e-12) < 150 else (1.0,)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


MAX_NAMED_LABELS = 12  # more labels than this in one panel: numbers on the points and a key beside the plot
MIN_DISTINCT_X = 3  # a cost axis with one or two distinct values says nothing a table does not


def _distinct(values) -> int:
    return len({round(float(v), 9) for v in values if v is not None})


def _overlapping(fig, groups: Sequence[Sequence]) -> bool:
    """Whether two labels of one group (a panel's) still overlap after adjustText, as drawn."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for texts in groups:
        boxes = [t.get_window_extent(renderer).expanded(0.98, 0.9) for t in texts]
        if any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]):
            return True
    return False


def pareto_figure(points: Sequence[dict], numbered: bool | None = None):
    """Dice against each cost in ``PARETO_AXES`` with at least ``MIN_DISTINCT_X`` distinct values, or None when no
    cost has. ``points``: dicts with model, family, backend, precision, dice, published (bool) and the cost keys.
    The front (lower cost, higher Dice) is computed over the measured points (over the published ones when nothing
    was measured) and drawn as a step line; a model's configurations are joined by a faint dotted line so that one
    label per model is enough. Labels name the models next to their points; where a panel has more than
    ``MAX_NAMED_LABELS`` of them, or adjustText leaves two overlapping, each model gets a number instead and a key
    beside the plot names it (``numbered`` forces one or the other)."""
    from segdeploy.analysis.stats import pareto_front

    plt = _plt()
    axes_used = [(k, label) for k, label in PARETO_AXES
                 if _distinct(p.get(k) for p in points if p.get("dice") is not None) >= MIN_DISTINCT_X]
    if not axes_used:
        return None
    cols = 2 if len(axes_used) > 1 else 1
    rows = (len(axes_used) + 1) // 2
    fig, axs = plt.subplots(rows, cols, figsize=(7.2 * cols, 6.0 * rows), squeeze=False)
    for ax in axs.ravel()[len(axes_used):]:
        ax.set_visible(False)
    measured_any = any(not p["published"] for p in points)
    # a label names the backend and precision only where the figure has more than one of them
    several_backends = len({p["backend"] for p in points}) > 1
    several_precisions = len({p["precision"] for p in points}) > 1
    # models numbered by family, then most accurate first, so that the key reads as a ranking per family
    best = {}
    for p in points:
        if p.get("dice") is not None:
            best[p["model"]] = max(best.get(p["model"], -1.0), p["dice"])
    order = sorted(best, key=lambda m: (next(p["family"] for p in points if p["model"] == m), -best[m], m))
    number = {m: i + 1 for i, m in enumerate(order)}

    def config(p: dict) -> str:
        parts = [p["backend"]] * several_backends + [p["precision"]] * several_precisions
        return " · " + " ".join(parts) if parts else ""

    panels = []
    for ax, (key, label) in zip(axs.ravel(), axes_used):
        pts = _merge_same_spot([p for p in points if p.get(key) and p.get("dice") is not None], key)
        basis = [p for p in pts if p["published"] != measured_any]
        front = pareto_front([p[key] for p in basis], [p["dice"] for p in basis]) if basis else []
        on_front = {id(p) for p, f in zip(basis, front) if f}
        if on_front:
            fpts = sorted((p for p in basis if id(p) in on_front), key=lambda p: p[key])
            ax.step([p[key] for p in fpts], [p["dice"] for p in fpts], where="post", color="#333333", lw=1.2,
                    ls="-" if measured_any else "--", zorder=1)
        by_model: dict[str, list[dict]] = {}
        for p in pts:
            by_model.setdefault(p["model"], []).append(p)
        labels = []  # (x, y, name label, number label, on the front)
        for model, mine in by_model.items():
            colour = family_colour(mine[0]["family"])
            if len(mine) > 1:
                line = sorted(mine, key=lambda p: p[key])
                ax.plot([p[key] for p in line], [p["dice"] for p in line], ls=":", lw=0.9, color=colour, alpha=0.6,
                        zorder=2)
            for p in mine:
                alpha = 1.0 if id(p) in on_front else 0.35
                marker = PRECISION_MARKERS.get(p["precision"], "X")
                if p["published"]:
                    ax.scatter(p[key], p["dice"], s=55, marker=marker, facecolor="none", edgecolor=colour,
                               linewidth=1.5, alpha=max(alpha, 0.6), zorder=3)
                else:
                    ax.scatter(p[key], p["dice"], s=50, marker=marker, color=colour, edgecolor="black",
                               linewidth=0.5, alpha=alpha, zorder=3)
            front_mine = [p for p in mine if id(p) in on_front]
            for p in front_mine:  # front points say which backend and precision they are
                labels.append((p[key], p["dice"], f" {model}{config(p)}", str(number[model]), True))
            if not front_mine:  # other models: one label at their most accurate configuration
                top = max(mine, key=lambda p: (p["dice"], -p[key]))
                labels.append((top[key], top["dice"], f" {model}", str(number[model]), False))
        if all(p[key] > 0 for p in pts):
            _plain_log_axis(ax)
        ax.set_xlabel(label + (", log scale" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("Dice")
        ax.grid(alpha=0.3, which="major")
        panels.append((ax, labels, pts, key))
    if numbered is None:
        numbered = max(len(labels) for _, labels, _, _ in panels) > MAX_NAMED_LABELS
    all_texts = []
    for ax, labels, pts, key in panels:
        texts = [ax.text(x, y, num if numbered else name, fontsize=BASE_FONT - 2 + numbered, va="center",
                         ha="center" if numbered else "left", color="#111111" if front else "#555555",
                         fontweight="bold" if numbered and front else "normal", zorder=5)
                 for x, y, name, num, front in labels]
        _label(ax, texts, x=[p[key] for p in pts], y=[p["dice"] for p in pts])
        all_texts.append(texts)
    if not numbered and _overlapping(fig, all_texts):
        plt.close(fig)
        return pareto_figure(points, numbered=True)
    handles = _family_handles(plt, {p["family"] for p in points})
    handles += _precision_handles(plt, {p["precision"] for p in points})
    handles.append(plt.Line2D([], [], color="#333333", label="front" if measured_any else "front (published Dice)"))
    handles.append(plt.Line2D([], [], ls="none", marker="o", color="#999999", alpha=0.35, label="dominated (faded)"))
    handles.append(plt.Line2D([], [], ls=":", color="#777777", label="one model's configurations"))
    if any(p["published"] for p in points):
        handles.append(plt.Line2D([], [], ls="none", marker="o", mfc="none", mec="#444444",
                                  label="hollow: published Dice, not measured here"))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.05 + 0.03 * (len(handles) > 5), 1, 1))
    if numbered:  # the key: number -> model, in its family's colour (bold numbers are on the front)
        colours = [family_colour(next(p["family"] for p in points if p["model"] == m)) for m in order]
        entries = [plt.Line2D([], [], ls="none", marker="o", color=c, mec="black", mew=0.5,
                              label=f"{number[m]:>2}  {m}") for m, c in zip(order, colours)]
        style = dict(frameon=False, handletextpad=0.3, title="models (bold number: on the front)", alignment="left",
                     fontsize=BASE_FONT, ncol=1 + (len(order) > 24))
        spare = axs.ravel()[len(axes_used):]
        if len(spare):  # the empty fourth panel holds the key, so the figure stays as wide as the page
            spare[0].set_visible(True)
            spare[0].axis("off")
            key = spare[0].legend(handles=entries, loc="center left", **style)
        else:
            key = fig.legend(handles=entries, loc="center left", bbox_to_anchor=(1.0, 0.5), **style)
        for text, colour in zip(key.get_texts(), colours):
            text.set_color(colour)
    return fig


def precision_figure(entries: Sequence[dict]):
    """p50 latency of every measured configuration: one panel per backend, one row per model (fastest first),
    one marker per precision, family by colour, and each lower precision's speed-up over the same backend's fp32
    written at the panel's right edge. ``entries``: dicts with model, family, backend, precision, p50_ms. None when
    the latencies take fewer than ``MIN_DISTINCT_X`` distinct values."""
    entries = [e for e in entries if e.get("p50_ms")]
    if _distinct(e["p50_ms"] for e in entries) < MIN_DISTINCT_X:
        return None
    plt = _plt()
    backends = sorted({e["backend"] for e in entries}, key=lambda b: (b != "torch", b))
    fastest: dict[str, float] = {}
    for e in entries:
        fastest[e["model"]] = min(fastest.get(e["model"], np.inf), e["p50_ms"])
    models = sorted(fastest, key=lambda m: (fastest[m], m))
    family = {e["model"]: e["family"] for e in entries}
    y = {m: len(models) - 1 - i for i, m in enumerate(models)}
    fig, axs = plt.subplots(1, len(backends), figsize=(4.3 * len(backends) + 1.6, 0.3 * len(models) + 1.6),
                            sharey=True, sharex=True, squeeze=False)
    for ax, backend in zip(axs[0], backends):
        mine = [e for e in entries if e["backend"] == backend]
        for m in models:
            ps = {e["precision"]: e["p50_ms"] for e in mine if e["model"] == m}
            if not ps:
                continue
            colour = family_colour(family[m])
            if len(ps) > 1:
                ax.plot([min(ps.values()), max(ps.values())], [y[m]] * 2, color=colour, lw=1.0, alpha=0.6, zorder=1)
            for precision, ms in ps.items():
                ax.scatter(ms, y[m], s=38, marker=PRECISION_MARKERS.get(precision, "X"), color=colour,
                           edgecolor="black", linewidth=0.5, zorder=3)
            gains = [f"{p} {ps['fp32'] / ms:.1f}×" for p, ms in ps.items() if p != "fp32" and "fp32" in ps]
            if gains:
                ax.annotate(", ".join(gains), xy=(1.0, y[m]), xycoords=("axes fraction", "data"),
                            xytext=(4, 0), textcoords="offset points", va="center", fontsize=BASE_FONT - 2,
                            color="#222222", annotation_clip=False)
        ax.set_title(backend + ("  (speed-up over its fp32 at right)" if any(
            e["precision"] != "fp32" for e in mine) else ""), fontsize=BASE_FONT)
        _plain_log_axis(ax)
        ax.set_xlabel("p50 latency, batch 1 (ms), log scale")
        ax.grid(axis="x", alpha=0.3, which="major")
        ax.grid(axis="y", alpha=0.12)
    axs[0][0].set_yticks([y[m] for m in models], models)
    for tick, m in zip(axs[0][0].get_yticklabels(), models):
        tick.set_color(family_colour(family[m]))
    axs[0][0].set_ylim(-0.7, len(models) - 0.3)
    handles = _family_handles(plt, set(family.values())) + _precision_handles(plt, {e["precision"] for e in entries})
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), frameon=False)
    fig.tight_layout(w_pad=6.0)
    return fig


GUARD_CLIP = (-10.0, 5.0)  # % of the fp32 Dice: the guard's axis; bars beyond end at the edge with an arrow


def guard_figure(bars: Sequence[dict]):
    """ΔDice of each lower precision against fp32, in percent of the fp32 Dice, with the -1% line of the 99% rule.
    The axis is clipped to ``GUARD_CLIP`` (a Dice of 0.003 that becomes 0.029 is +887%, which would squash every
    other bar against 0): a bar beyond ends at the edge with an arrow, and every value, with FAIL for the
    configurations that break the rule, is written in a column right of the plot, clear of the bars and of the
    axis labels. ``bars``: dicts with label, family, relative (fraction), passes (bool)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(bars) + 1.5))
    y = np.arange(len(bars))[::-1]
    values = np.array([100 * b["relative"] for b in bars])
    lo = max(GUARD_CLIP[0], min(-1.5, float(values.min(initial=0)) * 1.15))
    hi = min(GUARD_CLIP[1], max(0.5, float(values.max(initial=0)) * 1.15))
    for yi, b, v in zip(y, bars, values):
        shown = float(np.clip(v, lo, hi))
        fails = not b["passes"]
        ax.barh(yi, shown, color=family_colour(b["family"]), edgecolor=RULE_COLOUR if fails else "black",
                linewidth=1.6 if fails else 0.4, hatch="///" if fails else None, height=0.7)
        if shown != v:  # clipped: an arrow at the edge says the bar goes on
            ax.scatter(shown, yi, marker="<" if v < 0 else ">", s=60, color="#222222", zorder=4, clip_on=False)
        ax.annotate(f"{v:+.2f}%" + ("  FAIL" if fails else ""), xy=(1.0, yi), xycoords=("axes fraction", "data"),
                    xytext=(14, 0), textcoords="offset points", va="center", fontsize=BASE_FONT - 1,
                    color=RULE_COLOUR if fails else "#222222", fontweight="bold" if fails else "normal",
                    annotation_clip=False)
    ax.axvline(0, color="#333333", lw=0.8)
    ax.axvline(-1.0, color=RULE_COLOUR, ls="--", lw=1.4)
    ax.set_xlim(lo, hi)
    ax.set_yticks(y, [b["label"] for b in bars], fontsize=BASE_FONT - 1)
    ax.tick_params(axis="y", pad=8)  # room for a clipped bar's arrow at the left edge
    ax.set_ylim(-0.7, y.max() + 0.7 if len(y) else 1)
    clipped = bool(((values < lo) | (values > hi)).any())
    ax.set_xlabel("ΔDice vs fp32 (% of the fp32 Dice)" + (f"; axis clipped to {lo:g}…{hi:+g}%, the values at "
                                                          "right are exact" if clipped else ""))
    ax.grid(axis="x", alpha=0.3)
    families = {b["family"] for b in bars}
    handles = _family_handles(plt, families) + [plt.Line2D([], [], color=RULE_COLOUR, ls="--", lw=1.4,
                                                           label="99% rule: −1% of the fp32 Dice")]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(handles), frameon=False)
    return fig


def per_class_figure(models: Sequence[tuple[str, str]], classes: Sequence[str], values: np.ndarray):
    """Heatmap of Dice per model (rows, ``(name, family)``) and class (columns) on a fixed 0-1 colour scale,
    numbers written in."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 3.2, 0.42 * len(models) + 1.3))
    masked = np.ma.masked_invalid(values.astype(float))
    # a fixed 0-1 scale: colours compare across datasets, and 0.74 vs 0.81 does not look like black vs white
    image = ax.imshow(masked, cmap="cividis", vmin=0.0, vmax=1.0, aspect="auto")
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            norm = image.norm(v)
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=BASE_FONT - 1,
                    color="black" if norm > 0.55 else "white")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(models)), [m for m, _ in models])
    for tick, (_, family) in zip(ax.get_yticklabels(), models):
        tick.set_color(family_colour(family))
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    fig.colorbar(image, ax=ax, label="Dice", fraction=0.04)
    return fig


def cam_montage(tiles: Sequence[tuple[np.ndarray, str]], title: str):
    """A row of Grad-CAM overlays (RGB arrays) with one caption each."""
    plt = _plt()
    fig, axs = plt.subplots(1, len(tiles), figsize=(2.8 * len(tiles), 3.3), squeeze=False)
    for ax, (image, caption) in zip(axs[0], tiles):
        ax.imshow(image)
        ax.set_title(caption, fontsize=BASE_FONT)
        ax.axis("off")
    fig.suptitle(title, fontsize=BASE_FONT + 1)
    fig.tight_layout()
    return fig
