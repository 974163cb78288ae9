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

    plt.rcParams.update({"font.size": BASE_FONT, "axes.titlesize": BASE_FONT + 1, "axes.labelsize": BASE_FONT,
                         "legend.fontsize": BASE_FONT - 1, "svg.fonttype": "path", "svg.hashsalt": "segdeploy",
                         "axes.spines.top": False, "axes.spines.right": False})
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


def dice_figure(entries: Sequence[dict]):
    """Dice per model: mean over folds (family colour) with its 95% bootstrap CI, each fold as a grey dot behind,
    the published value as a hollow marker. ``entries``: dicts with model, family, dice, ci (low, high) or None,
    fold_dice, published (float or None), sorted best first."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(entries) + 1.4))
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
    ax.set_xlabel("Dice (mDSC, micro over test images)")
    ax.grid(axis="x", alpha=0.3)
    handles = _family_handles(plt, {e["family"] for e in entries})
    handles.append(plt.Line2D([], [], ls="none", marker="o", color="#999999", label="one fold"))
    handles.append(plt.Line2D([], [], color="#444444", marker="|", ls="-", label="95% bootstrap CI"))
    if any(e.get("published") is not None for e in entries):
        handles.append(plt.Line2D([], [], ls="none", marker="D", mfc="none", mec="#444444",
                                  label="published, not measured here"))
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=len(handles), frameon=False)
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
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def pareto_figure(points: Sequence[dict]):
    """Dice against each cost in ``PARETO_AXES`` that some point has. ``points``: dicts with model, family,
    backend, precision, dice, published (bool) and the cost keys. The front (lower cost, higher Dice) is computed
    over the measured points (over the published ones when nothing was measured) and drawn as a step line; a
    model's configurations are joined by a faint dotted line so that one label per model is enough."""
    from segdeploy.analysis.stats import pareto_front

    plt = _plt()
    axes_used = [(k, label) for k, label in PARETO_AXES if any(p.get(k) for p in points)]
    cols = 2 if len(axes_used) > 1 else 1
    rows = (len(axes_used) + 1) // 2
    fig, axs = plt.subplots(rows, cols, figsize=(7.2 * cols, 6.0 * rows), squeeze=False)
    for ax in axs.ravel()[len(axes_used):]:
        ax.set_visible(False)
    measured_any = any(not p["published"] for p in points)
    # a label names the backend and precision only where the figure has more than one of them
    several_backends = len({p["backend"] for p in points}) > 1
    several_precisions = len({p["precision"] for p in points}) > 1

    def config(p: dict) -> str:
        parts = [p["backend"]] * several_backends + [p["precision"]] * several_precisions
        return " · " + " ".join(parts) if parts else ""

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
        texts = []
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
                texts.append(ax.text(p[key], p["dice"], f" {model}{config(p)}",
                                     fontsize=BASE_FONT - 2, va="center", color="#111111", zorder=5))
            if not front_mine:  # other models: one label at their most accurate configuration
                best = max(mine, key=lambda p: (p["dice"], -p[key]))
                texts.append(ax.text(best[key], best["dice"], f" {model}", fontsize=BASE_FONT - 2, va="center",
                                     color="#555555", zorder=5))
        if all(p[key] > 0 for p in pts) and len({p[key] for p in pts}) > 1:
            _plain_log_axis(ax)
        ax.set_xlabel(label + (", log scale" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel("Dice")
        ax.grid(alpha=0.3, which="major")
        _label(ax, texts, x=[p[key] for p in pts], y=[p["dice"] for p in pts])
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
    return fig


def guard_figure(bars: Sequence[dict]):
    """ΔDice of each lower precision against fp32, in percent of the fp32 Dice, with the -1% line of the 99% rule.
    ``bars``: dicts with label, family, relative (fraction), passes (bool)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(bars) + 1.5))
    y = np.arange(len(bars))[::-1]
    values = np.array([100 * b["relative"] for b in bars])
    for yi, b, v in zip(y, bars, values):
        ax.barh(yi, v, color=family_colour(b["family"]), edgecolor=RULE_COLOUR if not b["passes"] else "black",
                linewidth=1.6 if not b["passes"] else 0.4, hatch="///" if not b["passes"] else None, height=0.7)
        ax.text(v, yi, f" {v:+.2f}%" + ("  fails" if not b["passes"] else ""), va="center",
                ha="left" if v >= 0 else "right", fontsize=BASE_FONT - 2,
                color=RULE_COLOUR if not b["passes"] else "#222222")
    ax.axvline(0, color="#333333", lw=0.8)
    ax.axvline(-1.0, color=RULE_COLOUR, ls="--", lw=1.4)
    lo = min(-1.5, float(values.min()) * 1.3 if len(values) else -1.5)
    hi = max(0.5, float(values.max()) * 1.3 if len(values) else 0.5)
    ax.set_xlim(lo, hi)
    ax.text(-1.0, y.max() + 0.8, "99% rule: −1% of fp32 Dice  ", color=RULE_COLOUR, fontsize=BASE_FONT - 1,
            va="bottom", ha="right")
    ax.set_yticks(y, [b["label"] for b in bars], fontsize=BASE_FONT - 1)
    ax.set_ylim(-0.7, y.max() + 1.6 if len(y) else 1)
    ax.set_xlabel("ΔDice vs fp32 (% of the fp32 Dice)")
    ax.grid(axis="x", alpha=0.3)
    families = {b["family"] for b in bars}
    ax.legend(handles=_family_handles(plt, families), loc="lower left", bbox_to_anchor=(0, 1.0),
              ncol=len(families), frameon=False)
    return fig


def per_class_figure(models: Sequence[tuple[str, str]], classes: Sequence[str], values: np.ndarray):
    """Heatmap of Dice per model (rows, ``(name, family)``) and class (columns), numbers written in."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 * len(classes) + 3.2, 0.42 * len(models) + 1.3))
    masked = np.ma.masked_invalid(values.astype(float))
    image = ax.imshow(masked, cmap="cividis", vmin=np.nanmin(values) if np.isfinite(values).any() else 0,
                      vmax=1.0 if not np.isfinite(values).any() else max(np.nanmax(values), np.nanmin(values) + 1e-3),
                      aspect="auto")
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
