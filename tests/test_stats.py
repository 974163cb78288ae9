"""Study statistics against independent computations: constructed cases with known answers, p-values against
scipy on the same vectors, the learning rate chosen on validation (never test)."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).parent))
from study_synth import SynthStudy  # noqa: E402

from segdeploy.evaluation.metrics import SegMetrics  # noqa: E402
from segdeploy.errors import SegdeployError  # noqa: E402
from segdeploy.analysis import stats  # noqa: E402
from segdeploy.analysis.aggregate import (ALL_DATASETS, family_comparison, model_accuracy,  # noqa: E402
                                       lr_choices)
from segdeploy.analysis.cost import deployment_cost, shift_table  # noqa: E402
from segdeploy.analysis.published import (canonical_model, join_costs, load_published,  # noqa: E402
                                       published_for)
from segdeploy.analysis.rows import from_record, load_rows  # noqa: E402
from segdeploy.analysis.summary import summarize  # noqa: E402


def binary_confusions(rng, n: int, q: np.ndarray | float) -> np.ndarray:
    """(n, 2, 2) with FP = FN = g - TP, TP ~ Binomial(g, q): the population micro Dice is E[g q] / E[g]."""
    g = rng.integers(200, 2000, n)
    tp = rng.binomial(g, np.clip(q, 0, 1))
    cms = np.zeros((n, 2, 2), np.int64)
    cms[:, 1, 1], cms[:, 1, 0], cms[:, 0, 1], cms[:, 0, 0] = tp, g - tp, g - tp, 10_000
    return cms


def ids(n: int, prefix: str = "img") -> np.ndarray:
    return np.array([f"{prefix}{i:04d}" for i in range(n)])


def row(model, dataset, fold, lr, dice, *, family="general", backend="torch", precision="fp32", val=None, **extra):
    raw = {"model": model, "family": family, "dataset": dataset, "backend": backend, "precision": precision,
           "device": "cpu", "status": "ok", "dice": dice, "split": "test", "n_images": 10, "batch": 8,
           "study": {"model": model, "dataset": dataset, "fold": fold, "lr": lr}, "val_dice": val,
           "train_dataset": dataset, "target": dataset, **extra}
    return from_record(raw)


# -- metrics from confusions -----------------------------------------------------------------------------------

def test_micro_scores_and_per_image_dice_equal_segmetrics():
    rng = np.random.default_rng(1)
    metrics = SegMetrics(3, compute_hd95=False)
    cms = np.stack([metrics.update(rng.integers(0, 3, (24, 20)), rng.integers(0, 3, (24, 20))) for _ in range(6)])
    expected = metrics.result()
    got = stats.micro_scores(cms)
    assert got["dice"] == pytest.approx(expected["dice"])
    assert got["iou"] == pytest.approx(expected["iou"])
    assert got["recall"] == pytest.approx(expected["recall_fg"])
    assert got["precision"] == pytest.approx(expected["precision_fg"])
    assert stats.per_image_dice(cms).mean() == pytest.approx(expected["dice_per_image"])


def test_weighted_micro_dice_equals_repeating_the_images():
    rng = np.random.default_rng(2)
    cms = rng.integers(0, 500, (12, 4, 4))
    weights = rng.integers(0, 4, (5, 12))
    got = stats.weighted_micro_dice(weights, cms)
    for w, value in zip(weights, got):
        assert value == pytest.approx(stats.micro_scores(np.repeat(cms, w, axis=0))["dice"])


# -- bootstrap ---------------------------------------------------------------------------------------------------

def test_bootstrap_ci_covers_the_known_dice_and_shrinks_with_more_images():
    true_dice = 0.8
    covered, widths = 0, {}
    for rep in range(20):
        rng = np.random.default_rng(100 + rep)
        cms = binary_confusions(rng, 100, rng.beta(16, 4, 100))  # q has mean 0.8, independent of g
        ci = stats.dice_ci(stats.FoldConfusions.from_folds([(ids(100), cms)]), n_resamples=500, seed=rep)
        covered += ci.covers(true_dice)
    assert covered >= 16  # nominal 95%; 16 of 20 leaves room for chance and for BCa on n = 100
    for n in (100, 1600):
        rng = np.random.default_rng(7)
        cms = binary_confusions(rng, n, rng.beta(16, 4, n))
        ci = stats.dice_ci(stats.FoldConfusions.from_folds([(ids(n), cms)]), n_resamples=500)
        assert ci.covers(true_dice)
        widths[n] = ci.high - ci.low
    assert widths[1600] < 0.5 * widths[100]  # ~ 1 / sqrt(16) = 0.25 expected


def test_paired_ci_covers_the_known_difference_and_pairs_by_image_id():
    rng = np.random.default_rng(3)
    n = 300
    difficulty = rng.gamma(2.0, 0.05, n)  # shared by both models: what pairing removes
    a = binary_confusions(rng, n, 0.90 - difficulty)
    b = binary_confusions(rng, n, 0.85 - difficulty)
    true_delta = 0.05  # both lose the same g-weighted difficulty; FP = FN keeps Dice = TP / G
    fa = stats.FoldConfusions.from_folds([(ids(n), a)])
    fb = stats.FoldConfusions.from_folds([(ids(n), b)])
    paired_ci = stats.paired_delta_ci([stats.paired(fa, fb)], n_resamples=1000)
    assert paired_ci.covers(true_delta)
    width_a = stats.dice_ci(fa, n_resamples=1000)
    width_b = stats.dice_ci(fb, n_resamples=1000)
    unpaired = np.hypot(width_a.high - width_a.low, width_b.high - width_b.low)
    assert paired_ci.high - paired_ci.low < 0.6 * unpaired

    # the same data with B in another order and five images A never saw: pairing by id gives the same interval
    order = rng.permutation(n)
    extra = binary_confusions(rng, 5, 0.5)
    fb_shuffled = stats.FoldConfusions.from_folds([(np.concatenate([ids(n)[order], ids(5, "other")]),
                                                    np.concatenate([b[order], extra]))])
    pa, pb = stats.paired(fa, fb_shuffled)
    assert len(pa.ids) == n and list(pa.ids) == list(pb.ids)
    again = stats.paired_delta_ci([(pa, pb)], n_resamples=1000)
    assert (again.low, again.high) == pytest.approx((paired_ci.low, paired_ci.high))


def test_fold_mean_uses_every_fold_that_tested_an_image():
    rng = np.random.default_rng(4)
    f0, f1 = binary_confusions(rng, 20, 0.9), binary_confusions(rng, 20, 0.7)
    fc = stats.FoldConfusions.from_folds([(ids(20), f0), (ids(20), f1)])
    ones = np.ones((1, 20))
    expected = (stats.micro_scores(f0)["dice"] + stats.micro_scores(f1)["dice"]) / 2
    assert fc.fold_dice(ones)[0] == pytest.approx(expected)
    per_image = (stats.per_image_dice(f0) + stats.per_image_dice(f1)) / 2
    np.testing.assert_allclose(fc.image_dice(), per_image)


# -- paired tests ------------------------------------------------------------------------------------------------

def _write_pair(tmp_path: Path, a: np.ndarray, b: np.ndarray, a_ids, b_ids) -> list:
    rows = []
    for model, family, cms, image_ids in (("segformer-b3", "general", a, a_ids), ("unet", "specialized", b, b_ids)):
        np.savez(tmp_path / f"{model}.npz", ids=np.asarray(image_ids), confusion=cms)
        dice = stats.micro_scores(cms)["dice"]
        rows.append(json.dumps({"model": model, "family": family, "dataset": "d", "backend": "torch",
                                "precision": "fp32", "device": "cpu", "status": "ok", "dice": dice, "split": "test",
                                "n_images": len(cms), "per_image": f"{model}.npz"}))
    (tmp_path / "results.jsonl").write_text("\n".join(rows) + "\n")
    return load_rows([tmp_path])


def test_family_comparison_p_values_equal_scipy_on_per_image_dice(tmp_path):
    rng = np.random.default_rng(5)
    n = 60
    difficulty = rng.gamma(2.0, 0.05, n)
    a = binary_confusions(rng, n, 0.86 - difficulty)
    b = binary_confusions(rng, n, 0.84 - difficulty)
    order = rng.permutation(n)  # B's sidecar lists the images in another order
    rows = _write_pair(tmp_path, a, b[order], ids(n), ids(n)[order])
    accs = model_accuracy(rows, lr_choices(rows), n_resamples=300)
    (comparison,) = family_comparison(accs, n_resamples=300)

    def dice(cm):  # per-image binary Dice written out independently
        return 2 * cm[1, 1] / (2 * cm[1, 1] + cm[0, 1] + cm[1, 0])
    per_a = np.array([dice(cm) for cm in a])
    per_b = np.array([dice(cm) for cm in b])  # aligned by id, not by file order
    assert comparison.test.n == n and comparison.n_dropped == 0
    assert comparison.test.p_wilcoxon == pytest.approx(sps.wilcoxon(per_a, per_b).pvalue, rel=1e-12)
    perm = sps.permutation_test((per_a, per_b), lambda x, y, axis: np.mean(x - y, axis=axis), vectorized=True,
                                permutation_type="samples", n_resamples=9999, rng=np.random.default_rng(0))
    assert comparison.test.p_permutation == pytest.approx(perm.pvalue, rel=1e-12)
    assert comparison.delta == pytest.approx(stats.micro_scores(a)["dice"] - stats.micro_scores(b)["dice"])


def test_stale_sidecar_is_refused_for_ci_and_tests(tmp_path):
    rng = np.random.default_rng(6)
    a, b = binary_confusions(rng, 30, 0.8), binary_confusions(rng, 30, 0.7)
    rows = _write_pair(tmp_path, a, b, ids(30), ids(30))
    np.savez(tmp_path / "unet.npz", ids=ids(30), confusion=binary_confusions(rng, 30, 0.5))  # overwritten later
    accs = model_accuracy(rows, lr_choices(rows), n_resamples=300)
    unet = next(x for x in accs if x.model == "unet")
    assert unet.ci is None and "sidecar" in unet.note and unet.dice == pytest.approx(rows[1].dice)
    (comparison,) = family_comparison(accs, n_resamples=300)
    assert comparison.test is None and comparison.ci is None


# -- learning rate, folds, cost, shift --------------------------------------------------------------------------

def test_lr_is_chosen_by_validation_dice_not_test():
    # lr 1e-4 is better on validation, 1e-5 is better on test: the report must use 1e-4
    rows = [row("m", "d", f, 1e-4, dice=t, val=v) for f, (t, v) in enumerate([(0.70, 0.90), (0.72, 0.91),
                                                                              (0.69, 0.89)])]
    rows += [row("m", "d", f, 1e-5, dice=t, val=v) for f, (t, v) in enumerate([(0.85, 0.80), (0.86, 0.81),
                                                                              (0.84, 0.79)])]
    choice = lr_choices(rows)[("m", "d")]
    assert choice.lr == 1e-4 and choice.val_by_lr[1e-4] == (pytest.approx(0.90), 3)
    (acc,) = model_accuracy(rows, lr_choices(rows))
    assert acc.lr == 1e-4 and acc.dice == pytest.approx(statistics.mean([0.70, 0.72, 0.69]))
    assert acc.dice_std == pytest.approx(statistics.stdev([0.70, 0.72, 0.69]))


def test_several_lrs_without_validation_dice_are_not_reported():
    rows = [row("m", "d", 0, 1e-4, dice=0.7), row("m", "d", 0, 1e-5, dice=0.8)]
    choice = lr_choices(rows)[("m", "d")]
    assert choice.lr is None and "no validation Dice" in choice.note
    assert model_accuracy(rows, lr_choices(rows)) == []


def test_deployment_cost_delta_and_the_99_percent_rule():
    lat = lambda p50: {"latency_ms": {"p50": p50, "p99": 2 * p50, "n": 100}}  # noqa: E731
    rows = []
    for fold, p50 in enumerate((10.0, 12.0, 11.0)):
        rows += [row("a", "d", fold, 1e-4, 0.800, **lat(p50 * 3)),
                 row("a", "d", fold, 1e-4, 0.793, backend="onnxruntime", precision="int8", **lat(p50),
                     dice_vs_torch_fp32=0.793 - 0.800),  # as bench writes it (rowkeys.References)
                 row("b", "d", fold, 1e-4, 0.600, **lat(p50 * 3)),
                 row("b", "d", fold, 1e-4, 0.590, backend="onnxruntime", precision="int8", **lat(p50),
                     dice_vs_torch_fp32=0.590 - 0.600),
                 row("b", "d", fold, 1e-4, 0.500, backend="onnxruntime", precision="fp16", **lat(p50))]
    costs = {(c.model, c.backend, c.precision): c for c in deployment_cost(rows, lr_choices(rows))}
    a8, b8 = costs[("a", "onnxruntime", "int8")], costs[("b", "onnxruntime", "int8")]
    assert a8.delta_dice == pytest.approx(-0.007) and a8.passes_99 is True  # 0.793 >= 0.99 * 0.8 = 0.792
    assert b8.delta_dice == pytest.approx(-0.010) and b8.passes_99 is False  # 0.590 < 0.594
    assert a8.p50_ms == pytest.approx(11.0) and a8.p99_ms == pytest.approx(22.0)  # medians over folds
    assert costs[("a", "torch", "fp32")].passes_99 is None
    # a row bench wrote without a torch fp32 reference gets no ΔDice and no verdict: no second reference rule
    assert costs[("b", "onnxruntime", "fp16")].delta_dice is None and costs[("b", "onnxruntime", "fp16")].passes_99 is None


def test_shift_table_in_domain_out_of_domain_and_drop():
    rows = []
    for fold in range(2):
        for model, family, inside, outside in (("g", "general", 0.8, 0.5), ("s", "specialized", 0.7, 0.6)):
            rows.append(row(model, "a", fold, 1e-4, inside, family=family))
            rows.append(from_record({**{"model": model, "family": family, "dataset": "b", "backend": "torch",
                                        "precision": "fp32", "device": "cpu", "status": "ok",
                                        "dice": outside + 0.01 * fold, "split": "all", "n_images": 5},
                                     "study": {"model": model, "dataset": "a", "fold": fold, "lr": 1e-4},
                                     "train_dataset": "a", "target": "b"}))
    choices = lr_choices(rows)
    table = {e.model: e for e in shift_table(rows, choices, model_accuracy(rows, choices))}
    assert table["g"].out_dice == pytest.approx(0.505) and table["g"].drop == pytest.approx(0.295)
    assert table["s"].drop == pytest.approx(0.095)
    assert table["family: general"].drop == pytest.approx(0.295) and table["family: general"].n == 1


def test_over_all_datasets_is_the_mean_of_the_per_dataset_comparisons(tmp_path):
    SynthStudy(n_images=25, folds=(0, 1), lrs=(1e-4,)).write(tmp_path)
    summary = summarize(load_rows([tmp_path]), n_resamples=300)
    per = {c.dataset: c for c in summary.comparisons}
    assert set(per) == {"derm", "cardio", ALL_DATASETS}
    overall = per[ALL_DATASETS]
    assert overall.delta == pytest.approx(np.mean([per["derm"].delta, per["cardio"].delta]))
    assert overall.test.n == 50 and overall.ci.covers(overall.delta)


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(8)
    cost, quality = rng.integers(0, 15, 60).astype(float), rng.integers(0, 15, 60).astype(float)
    mask = stats.pareto_front(cost, quality)
    for i in range(60):
        dominated = any(cost[j] <= cost[i] and quality[j] >= quality[i] and (cost[j], quality[j]) != (cost[i],
                        quality[i]) for j in range(60))
        assert mask[i] == (not dominated)


def test_ranks_share_ties():
    assert stats.ranks({"a": 0.9, "b": 0.8, "c": 0.8}) == {"a": 1.0, "b": 2.5, "c": 2.5}


# -- rows and published figures ---------------------------------------------------------------------------------

def test_latest_row_wins_and_sidecars_resolve_next_to_the_results(tmp_path):
    base = {"model": "m", "family": "general", "dataset": "d", "run": "/r/m", "backend": "torch",
            "precision": "fp32", "device_requested": "auto", "batch": 8, "split": "test", "n_images": 3}
    lines = [{**base, "status": "failed", "reason": "boom", "device": "auto"},
             {**base, "status": "ok", "dice": 0.5, "device": "cpu", "per_image": "side/m.npz"}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (loaded,) = load_rows([tmp_path / "results.jsonl"])
    assert loaded.ok and loaded.per_image == tmp_path / "side" / "m.npz"
    with pytest.raises(SegdeployError, match="no results file"):
        load_rows([tmp_path / "missing"])


def test_published_table_names_registered_models_and_never_joins_tiny_configurations(tmp_path):
    from segdeploy.models import list_models

    published = load_published()
    assert len(published) == 33 and {p.dataset for p in published} == {"neopolyp", "camus", "isic2018"}
    assert {p.model for p in published} <= set(list_models())
    assert canonical_model("TransNeXt-T") == "transnext-t-upernet" and canonical_model("U-KAN-L") == "ukan-l"
    assert published_for("unet-tiny", published) == []
    unet_neopolyp = next(p for p in published_for("unet", published) if p.dataset == "neopolyp")
    assert unet_neopolyp.dice == pytest.approx(0.833) and "not measured here" in unet_neopolyp.source

    class Entry:
        model = "segformer-b3"
    assert len(join_costs([Entry()], published)) == 3
    bad = tmp_path / "pub.csv"
    bad.write_text("model,dataset,dice,source\nunet,neopolyp,83.3,paper\n")
    with pytest.raises(SegdeployError, match="outside"):
        load_published(bad)


@pytest.mark.parametrize("lrs, said", [((1e-4,), True), ((1e-4, 1e-5), False)])
def test_limitations_say_when_no_learning_rate_was_chosen(tmp_path, lrs, said):
    from segdeploy.analysis.summary import limitations

    SynthStudy(n_images=20, folds=(0, 1), lrs=lrs).write(tmp_path)
    text = limitations(summarize(load_rows([tmp_path]), n_resamples=100))
    assert text.startswith("What this cannot show:")
    assert ("one learning rate per model (none chosen on validation)" in text) is said
    assert "as few as 20 test images per dataset" in text


@pytest.mark.parametrize("value, text", [(2436.03, "2440"), (999.6, "1000"), (331.2, "331"), (61.64, "61.6"),
                                         (0.4271, "0.427"), (0.0, "0"), (-1234.0, "-1230"), (None, "-"),
                                         (float("nan"), "-")])
def test_three_significant_figures_never_in_exponent_notation(value, text):
    from segdeploy.numerics import sig3

    assert sig3(value) == text
