"""Each key defined once: TrainConfig and BenchConfig own the names, defaults and help texts; the study file, the
command line, the template comments and the plan's fingerprint keys are read from them. Old names still load with
one line naming the new one, and a renamed or added key does not change the fingerprint of a finished cell."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segdeploy.bench.config import BenchConfig
from segdeploy.errors import SegdeployError, SegdeployWarning
from segdeploy.records import key_default, key_help
from segdeploy.study import plan
from segdeploy.study.config import (_TOP, BENCH_KEYS, TRAIN_KEYS, StudyConfig, _toml_loads, load_study, parse_study,
                                    template_text)
from segdeploy.train.config import TrainConfig

FINGERPRINTS = Path(__file__).parent / "data" / "study" / "fingerprints-v1.json"


def test_study_keys_take_their_defaults_from_train_and_bench_config():
    study = StudyConfig(name="s", models=("unet-tiny",), datasets=("synthetic",))
    for key, name in TRAIN_KEYS.items():
        assert getattr(study, key) == key_default(TrainConfig, name), key
    for key, name in BENCH_KEYS.items():
        assert getattr(study, key) == key_default(BenchConfig, name), key
    assert (study.batch_size, study.bench_batch, study.duration, study.timeout) == (8, 8, 1.0, None)
    # every StudyConfig field but the tables is a checked key of the study file, and nothing else is
    tables = {"resources", "cross", "class_maps", "imported", "path"}  # imported: [[imported]] tables
    assert set(_TOP) == {f.name for f in fields(StudyConfig)} - tables


def test_template_comments_are_the_help_texts():
    text = template_text("demo")
    line = next(ln for ln in text.splitlines() if ln.startswith("epochs = "))
    assert line.endswith("# " + key_help(TrainConfig, "epochs"))
    assert "# With process isolation: seconds after which" in text  # the commented-out timeout line
    cfg = parse_study(_toml_loads(text), default_name="demo")  # still a valid study file
    assert (cfg.batch_size, cfg.epochs) == (8, 6)


def test_the_command_line_options_read_the_same_help_and_defaults():
    from segdeploy.commands.app import app

    runner = CliRunner()
    out = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).output
    assert key_help(TrainConfig, "patience") in out
    out = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}).output
    assert "With process isolation: seconds after which" in out


def test_an_old_key_loads_with_one_line_naming_the_new_one(tmp_path):
    path = tmp_path / "old.toml"
    path.write_text('models = ["unet-tiny"]\ndatasets = ["synthetic"]\nbatch = 4\n', encoding="utf-8")
    with pytest.warns(SegdeployWarning) as caught:
        cfg = load_study(path)
    assert cfg.batch_size == 4
    assert [str(w.message) for w in caught] == [
        f"{path.resolve()}: `batch` is deprecated: write `batch_size` (read as batch_size = 4)."]
    path.write_text('models = ["unet-tiny"]\ndatasets = ["synthetic"]\nbatch = 4\nbatch_size = 8\n', encoding="utf-8")
    with pytest.raises(SegdeployError, match="both `batch` and `batch_size`"):
        load_study(path)


def test_fingerprints_of_cells_planned_before_the_key_refit_are_reproduced():
    """tests/data/study/fingerprints-v1.json was written by the code before `batch` became `batch_size` and
    the plan's key lists were derived: a resumed study must find its finished cells done."""
    recorded = json.loads(FINGERPRINTS.read_text(encoding="utf-8"))
    for variant, entry in recorded.items():
        data = {**_toml_loads(template_text(variant.split("+")[0])), **entry["study"]}
        cfg = parse_study(data, default_name=variant.split("+")[0])
        got = {c.cell_id: [plan.fingerprint(cfg, c), plan.train_fingerprint(cfg, c)] for c in plan.expand(cfg)}
        assert got == entry["cells"], variant
    # every bench key but timeout is fingerprinted (timeout changes no number: test_study's isolation test)
    assert set(BENCH_KEYS) - set(plan._BENCH_KEYS) == set() and plan._NOT_FINGERPRINTED == ("timeout",)


def test_an_old_plan_with_the_old_key_name_is_the_same_study(tmp_path):
    """A plan.json written before the rename records `batch`; the same study file is not 'another study'."""
    cfg = parse_study(_toml_loads(template_text("cost")), default_name="cost")
    cells = plan.expand(cfg)
    plan.prepare(tmp_path, cfg, cells)
    written = json.loads((tmp_path / plan.PLAN).read_text(encoding="utf-8"))
    study = written["study"]
    study["batch"] = study.pop("batch_size")
    (tmp_path / plan.PLAN).write_text(json.dumps(written), encoding="utf-8")
    assert plan.prepare(tmp_path, cfg, cells) == []  # no key differs, no cell is stale
    study["batch"] = 16
    (tmp_path / plan.PLAN).write_text(json.dumps(written), encoding="utf-8")
    with pytest.raises(SegdeployError, match="key `batch_size` differs"):
        plan.prepare(tmp_path, cfg, cells)


def test_the_deprecation_is_one_line_of_study_run(tmp_path):
    from segdeploy.commands.app import app

    path = tmp_path / "old.toml"
    path.write_text('models = ["unet-tiny"]\ndatasets = ["synthetic"]\nbatch = 4\nfolds = [9]\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["study", "run", str(path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2  # the bad fold stops it before any work, after the deprecation line
    lines = [ln for ln in result.output.splitlines() if "deprecated" in ln]
    assert len(lines) == 1 and "`batch` is deprecated: write `batch_size`" in lines[0]
