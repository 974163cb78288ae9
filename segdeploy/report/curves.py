"""Training progress per cell as small multiples (as nnU-Net's progress.png): one panel per model, validation Dice
of each fold (solid) and training loss (dashed, right axis) per epoch, the best trivial predictor's test Dice as a
dotted line; a panel whose curve was still rising at the end is titled "under-trained"."""

from __future__ import annotations

import math
from collections.abc import Sequence

from segdeploy.report.figures import _plt, family_colour
from segdeploy.analysis.verdict import under_trained

COLUMNS = 4


def curves_figure(panels: Sequence[dict], baseline: float | None = None):
    """``panels``: {"model", "family", "curves": [(fold, curve dict)]}; ``curve``: {"loss": [...], "val_dice": [...]}."""
    plt = _plt()
    n = len(panels)
    cols = min(COLUMNS, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.6, 2.1 * rows + 0.5), squeeze=False,
                             sharey=True)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for index, (ax, panel) in enumerate(zip(axes.flat, panels)):
        colour = family_colour(panel["family"])
        loss_ax = ax.twinx()
        rising = False
        for _, curve in panel["curves"]:
            val = [v if v is not None else math.nan for v in curve.get("val_dice") or []]
            loss = [v if v is not None else math.nan for v in curve.get("loss") or []]
            epochs = range(1, len(val) + 1)
            ax.plot(epochs, val, color=colour, lw=1.2)
            loss_ax.plot(range(1, len(loss) + 1), loss, color="#777777", lw=0.8, ls="--")
            rising = rising or bool(under_trained(curve))
        if baseline is not None:
            ax.axhline(baseline, color="#000000", lw=0.8, ls=":")
        ax.set_ylim(0, 1)
        ax.set_title(panel["model"] + (" (under-trained)" if rising else ""), fontsize=8,
                     color="#D55E00" if rising else "black")
        ax.tick_params(labelsize=7)
        loss_ax.tick_params(labelsize=7, colors="#777777")
        if index % cols == cols - 1 or index == n - 1:
            loss_ax.set_ylabel("training loss", fontsize=7, color="#777777")
        ax.set_xlabel("epoch", fontsize=7)
    axes[0][0].set_ylabel("validation Dice", fontsize=8)
    fig.tight_layout()
    return fig
