"""Verdicts the evidence carries: not learned against trivial baselines, one statistic for CI and p, stratified
pooling over learned datasets, power, cost claims between fronts, answer.json."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("scipy")

from segdeploy.analysis import stats  # noqa: E402
from segdeploy.analysis.rows import load_rows  # noqa: E402
from segdeploy.analysis.summary import summarize  # noqa: E402
from study_synth import SynthStudy, draw_confusions  # noqa: E402

NOISE = {"unet": 0.28, "hiformer-b": 0.05, "segformer-b3": 0.10, "segnext-l": 0.29, "unetplusplus": 0.2}
TRIVIAL = {"all_bg": 0.0, "all_fg": 0.08, "prior": 0.31}


def _summary(tmp_path, **kw):
    study = SynthStudy(folds=(0,), lrs=(1e-4,), n_images=30, cross={}, **kw)
    rows = load_rows([study.write(tmp_path / "study")])
    return summarize(rows, n_resamples=300, permutation=False)


@pytest.fixture(scope="module")
def noisy_study(tmp_path_factory):
    """derm and cardio learn (general best); "noise" had its masks shuffled: every model is at or below the
    training prior, and its noise favours other models than the learned datasets do."""
    tmp = tmp_path_factory.mktemp("verdict")
    return _summary(tmp, datasets={"derm": ["lesion"], "cardio": ["lv"], "noise": ["lesion"]},
                    dataset_skills={"noise": NOISE},
                    trivial={"derm": TRIVIAL, "cardio": TRIVIAL, "noise": TRIVIAL}, rising={"segnext-l"})


def test_shuffled_labels_are_not_learned_and_left_out_of_pooling_and_ranks(noisy_study):
    from segdeploy.analysis.answer import NOT_LEARNED, answer_sentences, study_answer

    s = noisy_study
    assert s.learned["noise"].learned is False and s.learned["derm"].learned and s.learned["cardio"].learned
    assert "the training prior mask scores 0.310" in s.learned["noise"].why
    sentences = {a.dataset: a for a in answer_sentences(s)}
    assert sentences["noise"].verdict == NOT_LEARNED
    assert sentences["noise"].text.startswith("noise: not learned — no model beats the best trivial predictor")
    # without the noise, the pooled best models are the per-dataset ones (with it, segnext-l and unet would win
    # the mean over three datasets) and the pooled verdict agrees with both datasets'
    pooled = next(c for c in s.comparisons if c.dataset == "all datasets")
    assert pooled.datasets == ["cardio", "derm"]
    assert (pooled.general_model, pooled.specialized_model) == ("segformer-b3", "hiformer-b")
    verdicts = {d: sentences[d].verdict for d in ("derm", "cardio", "all datasets")}
    assert set(verdicts.values()) == {"general"}, verdicts
    assert all("noise" not in per for per in s.ranks.values())
    doc = study_answer(s).to_json()
    assert doc["not_learned"] == ["noise"] and doc["pooled"]["datasets"] == ["cardio", "derm"]
    noise = next(d for d in doc["datasets"] if d["dataset"] == "noise")
    assert noise["learned"] is False and noise["claims"] == [] and noise["min_detectable_delta"] is None


def test_under_trained_cells_are_marked(noisy_study):
    from segdeploy.analysis.verdict import under_trained

    assert noisy_study.under_trained("derm", "segnext-l") == ["0"]
    assert noisy_study.under_trained("derm", "segformer-b3") == []
    assert under_trained({"val_dice": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}) is True
    assert under_trained({"val_dice": [0.1, 0.5, 0.6, 0.6, 0.6, 0.6]}) is False
    assert under_trained({"val_dice": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "stopped_early": True}) is False
    assert under_trained({"val_dice": [0.1, 0.2]}) is None


def test_answer_json_has_the_issue_schema(noisy_study, tmp_path):
    from segdeploy.analysis.answer import ANSWER_SCHEMA, write_answer

    doc = json.loads(write_answer(tmp_path / "answer.json", noisy_study).read_text())
    assert doc["schema"] == ANSWER_SCHEMA
    keys = {"dataset", "verdict", "delta", "ci", "p", "test", "n_images", "folds", "learned", "why",
            "min_detectable_delta", "fronts", "claims"}
    config = {"model", "backend", "precision", "device"}
    for d in doc["datasets"]:
        assert keys <= set(d), keys - set(d)
        assert d["verdict"] in ("general", "specialized", "no detectable difference", "not learned")
        assert set(d["fronts"]) >= {"general", "specialized"}
        assert all(config <= set(c) for front in d["fronts"].values() for c in front)
        for claim in d["claims"]:
            assert set(claim) == {"text", "faster", "slower"} and config == set(claim["faster"])
    derm = next(d for d in doc["datasets"] if d["dataset"] == "derm")
    assert derm["ci"][0] > 0 and derm["p"] < 0.05 and derm["n_images"] == 30 and derm["folds"] == 1
    assert 0 < derm["min_detectable_delta"] < 0.1
    assert keys | {"datasets"} <= set(doc["pooled"])


def _pair(rng, n, folds, gap):
    difficulty = rng.gamma(2.0, 0.05, n)
    ids = [f"i{k}" for k in range(n)]
    make = [stats.FoldConfusions.from_folds([(ids, draw_confusions(rng, n, 1, skill + rng.normal(0, 0.01),
                                                                   difficulty, noise=0.08))
                                             for _ in range(folds)]) for skill in (0.7 + gap, 0.7)]
    return make[0], make[1]


def test_ci_excludes_zero_exactly_when_p_is_below_005():
    rng = np.random.default_rng(1)
    outcomes = []
    for i in range(40):
        a, b = _pair(rng, int(rng.integers(6, 30)), int(rng.integers(1, 4)), float(rng.uniform(-0.04, 0.04)))
        ci = stats.paired_delta_ci([(a, b)], n_resamples=400, seed=i)
        assert ci.excludes_zero == (ci.p < 0.05), (ci, i)
        outcomes.append(ci.excludes_zero)
    assert 0 < sum(outcomes) < len(outcomes)  # both answers occur: the check is not vacuous
    for i in range(2000):  # the interval rule itself, on raw draws of many sizes, ties at 0 included
        draws = np.round(rng.normal(rng.normal(0, 0.05), 0.03, int(rng.integers(20, 3000))), int(rng.integers(2, 4)))
        low, high, p = stats.percentile_interval(draws)
        assert (low > 0 or high < 0) == (p < 0.05), (low, high, p)


def test_power_formula_and_its_inverse():
    from segdeploy.analysis.verdict import images_needed, min_detectable_delta, z_sum

    assert z_sum() == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    mde = min_detectable_delta(0.1, 100)
    assert mde == pytest.approx(0.028016, abs=1e-5)
    assert images_needed(mde, 0.1) == 100
    assert min_detectable_delta(0.1, 100, s_fold=0.01, folds=3) > mde
    assert images_needed(0.005, 0.1, s_fold=0.01, folds=1) is None  # the fold spread alone is too large


def test_trivial_baselines_on_known_masks():
    from segdeploy.evaluation.trivial import trivial_dice

    masks = {}
    for k in range(6):
        m = np.zeros((16, 24), np.uint8)
        m[4:12, 8:16] = 1  # the same square in every image: the prior mask is the square
        masks[f"t{k}"] = m
    ds = SimpleNamespace(load_mask=lambda i: masks[i])
    out = trivial_dice(ds, ["t0", "t1"], ["t2", "t3", "t4", "t5"], img_size=32, num_classes=2)
    assert out["prior"] == pytest.approx(1.0)
    assert out["all_bg"] == 0.0
    assert out["all_fg"] == pytest.approx(2 * 64 / (64 + 16 * 24))
    assert trivial_dice(ds, ["t0"], None, img_size=32, num_classes=2)["prior"] is None


def test_fronts_claim_between_front_configurations_only():
    from segdeploy.analysis.fronts import Config, Point, tradeoff

    def pt(model, family, dice, ms, noisy=False):
        return Point(Config(model, "onnxruntime", "fp32", "cpu"), family, dice, ms, noisy)

    points = [pt("gen-a", "general", 0.90, 100.0), pt("gen-b", "general", 0.895, 40.0),
              pt("spec-slow", "specialized", 0.899, 2000.0),  # the pathological scan model
              pt("spec-fast", "specialized", 0.892, 20.0, noisy=True), pt("spec-ok", "specialized", 0.891, 30.0)]
    t = tradeoff("d", "cpu", points, best_ci_low=0.885)
    assert math.isclose(t.threshold, 0.885)
    assert t.fastest["general"].config.model == "gen-b"
    assert t.fastest["specialized"].config.model == "spec-ok"  # the noisy one is not quoted
    (claim,) = t.claims
    assert (claim.faster.model, claim.slower.model) == ("spec-ok", "gen-b") and "1.33× faster" in claim.text
    assert "spec-slow" not in claim.text
    # the noisy 20 ms point does not set a budget; the specialized family leads until 40 ms, then the general
    assert t.crossovers == [(30.0, "specialized"), (40.0, "general")]
    assert "stand-in" not in claim.text  # no model here runs a plain-op version of a CUDA kernel


def test_a_claim_against_a_plain_op_stand_in_says_so():
    """A speed-up against swin-umamba on a CPU is one against its selective scan written as plain ops (its CUDA
    kernel does not run here): the claim names the stand-in, from the model registry."""
    from segdeploy.analysis.fronts import Config, Point, tradeoff
    from segdeploy.models import plain_ops

    points = [Point(Config("segnext-l", "openvino", "fp32", "cpu"), "general", 0.892, 141.0),
              Point(Config("swin-umamba", "openvino", "fp32", "cpu"), "specialized", 0.889, 2040.0)]
    (claim,) = tradeoff("neopolyp", "cpu", points).claims
    assert "14.47× faster" in claim.text
    assert claim.text.endswith(f"(swin-umamba runs its {plain_ops('swin-umamba')} here: the cost of that stand-in, "
                               "not of its original kernel)")
    assert "segnext-l runs" not in claim.text


def test_study_plan_prints_the_images_needed():
    from typer.testing import CliRunner

    from segdeploy.commands.app import app

    result = CliRunner().invoke(app, ["study", "plan", "none", "--sd", "0.1", "--fold-sd", "0.005", "--delta",
                                      "0.02"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # n = 0.1² / ((0.02 / 2.8016)² − 0.005² / F): 386 with one fold, 235 with 3, 218 with 5
    assert "│ 386" in result.output and "│ 235" in result.output and "│ 218" in result.output


def test_training_curve_is_read_from_the_runs_history(tmp_path):
    from segdeploy.study.cell import training_curve

    lines = [{"epoch": e + 1, "loss": 1.0 / (e + 1), "val_dice": 0.1 * e + 0.123456789} for e in range(5)]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    curve = training_curve(tmp_path, SimpleNamespace(stopped_early=True, best_epoch=5))
    assert curve == {"loss": [1.0, 0.5, 0.33333, 0.25, 0.2], "val_dice": [0.12346, 0.22346, 0.32346, 0.42346,
                                                                           0.52346],
                     "stopped_early": True, "best_epoch": 5}
    assert training_curve(tmp_path / "none", None) is None
