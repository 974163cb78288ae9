"""Cost claims between the families' accuracy–latency fronts, per dataset x device.

* **front** of a family: its configurations (model x backend x precision) no other configuration of the same family
  beats on both Dice (higher) and p50 latency (lower) (``stats.pareto_front``).
* **as accurate as it gets**: Dice >= the threshold ``min(CI low of the best model, best Dice - TOLERANCE)`` (the
  best model's 95% CI, or 0.01 Dice where that is wider); the best Dice is the highest of any configuration.
* **the trade-off**: the fastest configuration of each family above the threshold (it lies on its family's front),
  and the latency budgets at which the more accurate family changes (best Dice reachable within the budget).
* A speed-up in an answer is between these two configurations, never against a dominated one. Timings flagged
  ``noisy`` are not used while an unflagged configuration qualifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from segdeploy.analysis import stats

TOLERANCE = 0.01
FAMILIES = ("general", "specialized")


@dataclass(frozen=True)
class Config:
    model: str
    backend: str
    precision: str
    device: str

    def to_json(self) -> dict:
        return {"model": self.model, "backend": self.backend, "precision": self.precision, "device": self.device}

    def __str__(self) -> str:
        return f"{self.model} ({self.backend} {self.precision})"


@dataclass(frozen=True)
class Point:
    config: Config
    family: str
    dice: float
    p50_ms: float
    noisy: bool | None = False  # None: timing not judged (rows before bench/3); treated as clean
    source: str | None = None  # where a published Dice comes from (None: measured here)
    approx: bool = False


@dataclass(frozen=True)
class Claim:
    text: str
    faster: Config
    slower: Config


@dataclass
class Tradeoff:
    dataset: str
    device: str
    threshold: float
    fronts: dict[str, list[Point]]
    fastest: dict[str, Point | None]
    crossovers: list[tuple[float, str]] = field(default_factory=list)  # (budget ms, family more accurate from it)
    claims: list[Claim] = field(default_factory=list)


def family_fronts(points: Sequence[Point]) -> dict[str, list[Point]]:
    out = {}
    for family in FAMILIES:
        pts = [p for p in points if p.family == family]
        if pts:
            mask = stats.pareto_front([p.p50_ms for p in pts], [p.dice for p in pts])
            out[family] = sorted((p for p, m in zip(pts, mask) if m), key=lambda p: p.p50_ms)
    return out


def _fastest(points: Sequence[Point], threshold: float) -> Point | None:
    ok = [p for p in points if p.dice >= threshold - 1e-12]
    clean = [p for p in ok if not p.noisy]
    return min(clean or ok, key=lambda p: (p.p50_ms, -p.dice), default=None)


def crossovers(fronts: dict[str, list[Point]]) -> list[tuple[float, str]]:
    """(budget, family): from this p50 budget on, ``family`` reaches the higher Dice (until the next entry)."""
    budgets = sorted({p.p50_ms for pts in fronts.values() for p in pts})
    out: list[tuple[float, str]] = []
    for t in budgets:
        best = {f: max((p.dice for p in pts if p.p50_ms <= t), default=None) for f, pts in fronts.items()}
        present = {f: d for f, d in best.items() if d is not None}
        if not present:
            continue
        winner = max(present, key=lambda f: present[f])
        if not out or out[-1][1] != winner:
            out.append((t, winner))
    return out


def _ms(value: float) -> str:
    from segdeploy.numerics import sig3

    return f"{sig3(value)} ms"


def _where(device: str) -> str:
    """A device label ("cpu: Xeon ..., 2 cores") as words inside a sentence ("cpu (Xeon ..., 2 cores)")."""
    kind, _, hardware = device.partition(": ")
    return f"{kind} ({hardware})" if hardware else device


def plain_ops_of(model: str) -> str:
    """What ``model`` runs as plain PyTorch ops instead of its original's CUDA kernel ("" if nothing, or if the
    registry does not know the name; a report of a results file may run without torch)."""
    try:
        from segdeploy.models import list_models, plain_ops
    except ImportError:
        return ""
    return plain_ops(model) if model in list_models() else ""


def _describe(p: Point) -> str:
    dice = f"Dice {p.dice:.3f}" + (" (approx.)" if p.approx else "") + (" published" if p.source else "")
    return f"{p.config} at {_ms(p.p50_ms)} ({dice}{', noisy timing' if p.noisy else ''})"


def tradeoff(dataset: str, device: str, points: Sequence[Point], best_ci_low: float | None = None) -> Tradeoff | None:
    points = [p for p in points if p.dice is not None and p.p50_ms]
    if not points:
        return None
    best = max(p.dice for p in points)
    threshold = best - TOLERANCE if best_ci_low is None else min(best_ci_low, best - TOLERANCE)
    fronts = family_fronts(points)
    fastest = {f: _fastest(fronts.get(f, []) + [p for p in points if p.family == f], threshold) for f in FAMILIES}
    # budgets are quoted from clean timings: a family's noisy points count only where it has no clean one
    clean = [p for f in FAMILIES for p in ([q for q in points if q.family == f and not q.noisy]
                                           or [q for q in points if q.family == f])]
    t = Tradeoff(dataset, device, threshold, fronts, fastest, crossovers(family_fronts(clean)))
    g, s = fastest["general"], fastest["specialized"]
    if g is not None and s is not None:
        faster, slower = (g, s) if g.p50_ms <= s.p50_ms else (s, g)
        ratio = slower.p50_ms / faster.p50_ms
        text = (f"on {_where(device)}, within Dice {threshold:.3f} of the best, the fastest {faster.family} configuration "
                f"{_describe(faster)} is {ratio:.2f}× faster than the fastest {slower.family} one, "
                f"{_describe(slower)}")
        # a ratio against an operator the original runs as its own CUDA kernel is the cost of the stand-in here
        stand_ins = {p.config.model: plain_ops_of(p.config.model) for p in (faster, slower)}
        text += "".join(f" ({model} runs its {ops} here: the cost of that stand-in, not of its original kernel)"
                        for model, ops in stand_ins.items() if ops)
        t.claims.append(Claim(text, faster.config, slower.config))
    return t


def tradeoff_text(t: Tradeoff) -> str:
    """The trade-off in words: the claim, or which family alone is as accurate as it gets, and the budgets."""
    parts = [c.text for c in t.claims]
    if not parts:
        only = [f for f, p in t.fastest.items() if p is not None]
        if only:
            f = only[0]
            parts.append(f"on {_where(t.device)}, only the {f} family reaches Dice ≥ {t.threshold:.3f}; its fastest is "
                         f"{_describe(t.fastest[f])}")
    if len(t.crossovers) > 1:
        steps = ", ".join(f"{family} from {_ms(budget)}" for budget, family in t.crossovers)
        parts.append(f"the more accurate family within a latency budget: {steps}")
    elif t.crossovers and len(t.fronts) > 1:
        parts.append(f"the {t.crossovers[0][1]} family is the more accurate at every latency budget measured")
    return "; ".join(parts)
