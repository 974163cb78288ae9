"""The study file, its plan, its results file and the lr rule, without training anything (fast)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segdeploy.errors import SegdeployError
from segdeploy.study.config import TEMPLATES, load_study, template_text
from segdeploy.study.plan import (MARKER, expand, fingerprint, is_done, prepare, read_marker, write_marker)
from segdeploy.study.results import RESULTS, read_rows, replace_cell_rows, lr_selections, write_rows

BASE = """
models = ["unet-tiny", "segformer-tiny"]
datasets = ["synthetic:36"]
k = 4
folds = [0, 1]
lr = [2e-3, 5e-4]
epochs = 2
img_size = 64
"""


def study(tmp_path: Path, text: str = BASE, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> SegdeployError:
    with pytest.raises(SegdeployError) as info:
        load_study(path)
    return info.value


@pytest.mark.parametrize("template", TEMPLATES)
def test_templates_load(template, tmp_path):
    config = load_study(study(tmp_path, template_text(template)))
    cells = expand(config)
    if template == "reference":
        assert len(config.models) == 11 and config.lr == (1e-4, 5e-5, 1e-5) and config.folds == (0, 1, 2, 3, 4)
        assert (config.img_size, config.epochs, config.patience) == (512, 150, 20)
        assert len(cells) == 11 * 3 * 5 * 3
    if template == "cost":
        assert not config.train and all(c.fold is None and c.lr is None for c in cells)
        assert not any(m.endswith("-tiny") for m in config.models)


@pytest.mark.parametrize("text, key, fix", [
    (BASE + "epoch = 3\n", "`epoch`", "did you mean `epochs`"),
    (BASE.replace("lr = [2e-3, 5e-4]", 'lr = ["fast"]'), "`lr`", "lr = [1e-4"),
    (BASE.replace("folds = [0, 1]", "folds = [0, 4]"), "`folds`", "folds = "),
    (BASE.replace('"segformer-tiny"', '"segformer-huge"'), "`models`", "segformer-tiny"),
    (BASE.replace('models = ["unet-tiny", "segformer-tiny"]', ""), "`models` is missing", "models = ["),
    (BASE + 'device = "gpu"\n', "`device`", 'device = "auto"'),
    (BASE + 'backends = ["torch", "ort"]\n', "`backends`", "onnxruntime"),
    (BASE + "[resources]\nnum_cpu = 2\n", "`resources.num_cpu`", "did you mean `num_cpus`"),
    (BASE + '[[cross]]\nsource = "elsewhere"\ntarget = "x"\n', "`cross.source`", "as it is written in `datasets`"),
    (BASE + '[[cross]]\nsource = "synthetic:36"\ntarget = "x"\nclass_map = "polyp"\n', "`cross.class_map`",
     'class_map = "polyp=1,2"'),
    (BASE + '[class_maps]\n"synthetic:48" = "polyp=1,2"\n', "`class_maps` names 'synthetic:48'", "`datasets`"),
    (BASE.replace("epochs = 2", "train = false\ngradcam = true"), "`gradcam`", "gradcam = false"),
    (BASE + "epochs = 3\n", "not valid TOML", "correct the line"),
    (BASE + 'isolate = "thread"\n', "`isolate`", 'isolate = "process"'),
    (BASE + "threads = 0\n", "`threads`", "threads = 2"),
    (BASE + "timeout = -5\n", "`timeout`", "timeout = 1800.0"),
    (BASE + 'timeout = 60\nisolate = "none"\n', "`timeout` needs isolate", 'isolate = "process"'),
])
def test_config_errors_name_key_file_and_fix(tmp_path, text, key, fix):
    path = study(tmp_path, text)
    error = error_of(path)
    assert key in error.message and error.path == str(path) and fix in (error.fix or "")
    assert str(path) in str(error)  # the one line the CLI prints


def test_class_map_and_relative_paths(tmp_path):
    (tmp_path / "data" / "a").mkdir(parents=True)
    config = load_study(study(tmp_path, BASE.replace('"synthetic:36"', '"data/a"') +
                              '[[cross]]\nsource = "data/a"\ntarget = "data/b"\nclass_map = "polyp=1,2; other = 3"\n'))
    assert config.datasets == (str(tmp_path / "data" / "a"),)  # relative to the study file, not the cwd
    assert config.cross[0].source == config.datasets[0] and config.cross[0].name == "b"
    assert config.cross[0].class_map == "polyp=1,2; other = 3"


def test_expansion_covers_the_grid_once(tmp_path):
    config = load_study(study(tmp_path))
    cells = expand(config)
    assert len(cells) == 2 * 2 * 2 == len({c.cell_id for c in cells})
    assert {(c.model, c.fold, c.lr) for c in cells} == {(m, f, lr) for m in config.models for f in (0, 1)
                                                         for lr in (2e-3, 5e-4)}
    assert cells[0].study_field() == {"model": "unet-tiny", "dataset": "synthetic:36", "fold": 0, "lr": 2e-3,
                                      "cell_id": cells[0].cell_id}
    cost = expand(load_study(study(tmp_path, BASE + "train = false\n", "c.toml")))
    assert [(c.model, c.fold, c.lr) for c in cost] == [("unet-tiny", None, None), ("segformer-tiny", None, None)]


def test_plan_refuses_another_study_unless_forced(tmp_path):
    out = tmp_path / "out"
    config = load_study(study(tmp_path))
    cells = expand(config)
    assert prepare(out, config, cells) == []
    plan = json.loads((out / "plan.json").read_text())
    assert [c["cell_id"] for c in plan["cells"]] == [c.cell_id for c in cells]
    assert (out / "study.toml").read_text() == (tmp_path / "s.toml").read_text()
    assert prepare(out, config, cells) == []  # the same study again: fine

    # every cell finished: rows and markers
    rows = [{"study": c.study_field(), "backend": "torch", "val_dice": 0.5} for c in cells]
    write_rows(out / RESULTS, rows)
    for c in cells:
        (out / "cells" / c.cell_id).mkdir(parents=True)
        (out / "cells" / c.cell_id / "cell.json").write_text("{}")  # no training record: the folder is redone
        write_marker(out, config, c, status="ok", n_rows=1, seconds=1.0)
    assert all(is_done(out, config, c) for c in cells)

    changed = load_study(study(tmp_path, BASE.replace("lr = [2e-3, 5e-4]", "lr = [2e-3, 1e-4]"), "t.toml"))
    with pytest.raises(SegdeployError) as info:
        prepare(out, changed, expand(changed))
    assert "key `lr` differs" in info.value.message and "--force" in info.value.fix

    new_cells = expand(changed)
    stale = prepare(out, changed, new_cells, force=True)
    gone = {c.cell_id for c in cells} - {c.cell_id for c in new_cells}
    assert set(stale) == gone and all(c.lr == 5e-4 for c in cells if c.cell_id in gone)
    kept = [c for c in new_cells if c.lr == 2e-3]
    assert all(is_done(out, changed, c) for c in kept)  # unchanged cells are not redone
    assert not any(is_done(out, changed, c) for c in new_cells if c.lr == 1e-4)


def test_changed_training_settings_invalidate_the_cell_folder(tmp_path):
    out = tmp_path / "out"
    config = load_study(study(tmp_path))
    cells = expand(config)
    prepare(out, config, cells)
    for c in cells:
        (out / "cells" / c.cell_id).mkdir(parents=True)
        write_marker(out, config, c, status="ok", n_rows=0, seconds=1.0)
    longer = load_study(study(tmp_path, BASE.replace("epochs = 2", "epochs = 3"), "t.toml"))
    stale = prepare(out, longer, expand(longer), force=True)
    assert sorted(stale) == sorted(c.cell_id for c in cells)
    assert not any((out / "cells" / c.cell_id).exists() for c in cells)
    assert fingerprint(config, cells[0]) != fingerprint(longer, cells[0])


def test_replacing_a_cells_rows_never_duplicates(tmp_path):
    path = tmp_path / RESULTS
    replace_cell_rows(path, "a", [{"study": {"cell_id": "a"}, "status": "failed"}])
    replace_cell_rows(path, "b", [{"study": {"cell_id": "b"}, "n": i} for i in range(3)])
    rows = replace_cell_rows(path, "a", [{"study": {"cell_id": "a"}, "n": i} for i in range(2)])
    assert [(r["study"]["cell_id"], r.get("status")) for r in rows].count(("a", "failed")) == 0
    assert len(read_rows(path)) == 5
    with open(path, "a") as f:  # a torn line left by something else is skipped, never fatal
        f.write('{"study": {"cell_id": "c"')
    assert len(read_rows(path)) == 5


def test_lr_is_chosen_on_mean_validation_dice_not_on_one_fold_or_on_test():
    rows = []
    val = {(1e-3, 0): 0.90, (1e-3, 1): 0.60, (1e-4, 0): 0.80, (1e-4, 1): 0.79}  # best single fold: 1e-3
    test = {1e-3: 0.95, 1e-4: 0.70}  # best on test: 1e-3
    for (lr, fold), v in val.items():
        for backend in ("torch", "onnxruntime"):  # several rows per cell carry the cell's one val_dice
            rows.append({"study": {"model": "m", "dataset": "d", "lr": lr, "fold": fold, "cell_id": f"{lr}-{fold}"},
                         "val_dice": v, "dice": test[lr], "backend": backend})
    (choice,) = lr_selections(rows, [1e-3, 1e-4], [0, 1])
    means = {lr: (val[(lr, 0)] + val[(lr, 1)]) / 2 for lr in (1e-3, 1e-4)}
    assert choice["lr"] == max(means, key=means.get) == 1e-4
    assert choice["mean_val_dice"] == pytest.approx(means[1e-4]) and choice["complete"]
    (partial,) = lr_selections(rows[:4], [1e-3, 1e-4], [0, 1])
    assert not partial["complete"]
    tied = [{**r, "val_dice": 0.7} for r in rows]
    assert lr_selections(tied, [1e-3, 1e-4], [0, 1])[0]["lr"] == 1e-4  # a tie goes to the smaller lr


def test_failed_cells_are_rows_and_are_retried(tmp_path, monkeypatch):
    from segdeploy.study import cell as cell_module
    from segdeploy.study.runner import run_study

    calls = []

    def broken(config, cell, folder):
        calls.append(cell.cell_id)
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(cell_module, "train_cell", broken)
    path = study(tmp_path, BASE.replace('["unet-tiny", "segformer-tiny"]', '["unet-tiny"]')
                 .replace("lr = [2e-3, 5e-4]", "lr = [2e-3]"))
    out = tmp_path / "out"
    first = run_study(path, out)
    assert (first.ok, first.failed) == (0, 2) and len(calls) == 2
    rows = read_rows(out / RESULTS)
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert all(r["study"]["cell_id"] in r["run_name"] and "out of memory" in r["reason"] and r["stage"] == "train"
               for r in rows)
    assert "RuntimeError" in (out / "cells" / rows[0]["study"]["cell_id"] / "error.txt").read_text()
    assert all(read_marker(out, c)["status"] == "failed" for c in expand(load_study(path)))
    second = run_study(path, out)  # failed cells are tried again, their rows replaced
    assert (second.done_before, second.failed) == (0, 2) and len(calls) == 4
    assert len(read_rows(out / RESULTS)) == 2


def test_rows_without_a_marker_are_dropped_at_start(tmp_path, monkeypatch):
    """A study killed between a cell's rows and its marker: the rows go, the cell is redone."""
    from segdeploy.study import cell as cell_module
    from segdeploy.study.runner import run_study

    monkeypatch.setattr(cell_module, "train_cell", lambda *a: (_ for _ in ()).throw(RuntimeError("x")))
    path = study(tmp_path, BASE.replace('["unet-tiny", "segformer-tiny"]', '["unet-tiny"]')
                 .replace("lr = [2e-3, 5e-4]", "lr = [2e-3]").replace("folds = [0, 1]", "folds = [0]"))
    out = tmp_path / "out"
    run_study(path, out)
    (cell,) = expand(load_study(path))
    (out / "cells" / cell.cell_id / MARKER).unlink()
    with open(out / RESULTS, "a") as f:
        f.write('{"study": {"cell_id": "')  # and a torn line
    from segdeploy.study.runner import _repair

    _repair(out, load_study(path), [cell], [])
    assert read_rows(out / RESULTS) == [] and (out / RESULTS).read_text() == ""


def test_ray_executor_without_ray_names_the_extra(tmp_path, monkeypatch):
    from segdeploy.study.executors import make_executor

    from segdeploy.study.runner import run_study

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    config = load_study(study(tmp_path))
    with pytest.raises(SegdeployError) as info:
        make_executor("ray", config, tmp_path)
    assert "segdeploy[cluster]" in info.value.fix
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ray" else object())
    with pytest.raises(SegdeployError) as info:
        run_study(config, tmp_path / "out", executor="ray")
    assert "segdeploy[cluster]" in info.value.fix and not (tmp_path / "out").exists()  # refused before any work


def test_cli_init_writes_a_loadable_file_and_refuses_to_overwrite(tmp_path):
    from typer.testing import CliRunner

    from segdeploy.commands.app import app

    target = tmp_path / "study.toml"
    runner = CliRunner()
    first = runner.invoke(app, ["study", "init", "--template", "cost", str(target)])
    assert first.exit_code == 0, first.output
    assert not load_study(target).train
    again = runner.invoke(app, ["study", "init", str(target)])
    assert again.exit_code == 2 and "exists" in again.output


def test_live_view_shows_stage_epoch_and_eta(tmp_path):
    from rich.console import Console

    from segdeploy.fileio import atomic_write_json
    from segdeploy.study.cell import CellOutcome
    from segdeploy.study.plan import STATUS, cell_dir
    from segdeploy.study.view import StudyView

    config = load_study(study(tmp_path))
    cells = expand(config)
    view = StudyView(tmp_path, len(cells), done_before=2, parallelism=2, epochs=config.epochs)
    view.start(cells[2])
    view.start(cells[3])
    folder = cell_dir(tmp_path, cells[2])
    folder.mkdir(parents=True)
    from datetime import datetime, timezone

    atomic_write_json(folder / STATUS, {"stage": "train", "started": datetime.now(timezone.utc).isoformat()})
    (folder / "history.jsonl").write_text('{"epoch": 1}\n')
    line = view.finish(cells[4], CellOutcome(cells[4].cell_id, "ok", [{}] * 3, 120.0, "bench"))
    assert "[3/8]" in line and "2m00s" in line
    console = Console(record=True, width=200)
    console.print(view)
    text = console.export_text()
    assert "3 done (2 earlier), 1 running, 0 failed, 4 pending of 8 cells" in text
    assert any(cells[2].cell_id in line and "train epoch 2/2" in line for line in text.splitlines())
    assert cells[3].cell_id not in text  # submitted, not started: queued
    # 8 - 3 finished = 5 cells left, 120 s per cell, 2 at once -> 300 s
    assert "ETA 5m00s" in text


def test_a_second_driver_on_the_same_folder_is_refused(tmp_path):
    from segdeploy.locks import hold
    from segdeploy.study.runner import run_study

    path = study(tmp_path)
    out = tmp_path / "out"
    with hold(out / ".segdeploy-study.lock", "study run", out):  # what a running driver holds
        with pytest.raises(SegdeployError) as info:
            run_study(path, out)
    assert "in use by segdeploy study run" in info.value.message and not (out / "plan.json").exists()


def test_cross_targets_must_give_the_runs_classes(tmp_path):
    """Runs trained on synthetic merged to one lesion class can be scored on a binary lesion set; the same set
    against the four-class runs is refused before any work, and a class map that names a missing label too."""
    from segdeploy.study.runner import _check_datasets

    target = tmp_path / "binary"
    (target / "images").mkdir(parents=True)
    (target / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(target / "images" / "a.png")
    Image.fromarray(np.ones((8, 8), np.uint8)).save(target / "masks" / "a.png")
    (target / "meta.json").write_text('{"classes": ["background", "lesion"]}')
    cross = f'[[cross]]\nsource = "synthetic:36"\ntarget = "{target}"\n'
    with pytest.raises(SegdeployError) as info:
        _check_datasets(load_study(study(tmp_path, BASE + cross)))
    assert "`cross` target 'binary'" in info.value.message and "class_map" in info.value.fix
    merged = '[class_maps]\n"synthetic:36" = "lesion=3"\n'  # train on synthetic's lesion class alone
    config = load_study(study(tmp_path, BASE + merged + cross, "m.toml"))
    _check_datasets(config)
    assert config.class_maps == {"synthetic:36": "lesion=3"}
    cells = expand(config)
    other = load_study(study(tmp_path, BASE + cross, "o.toml"))
    from segdeploy.study.plan import train_fingerprint

    assert train_fingerprint(config, cells[0]) != train_fingerprint(other, cells[0])  # the map changes the run
    _check_datasets(load_study(study(tmp_path, BASE + merged + cross + 'class_map = "lesion=1"\n', "n.toml")))
    with pytest.raises(SegdeployError) as info:
        _check_datasets(load_study(study(tmp_path, BASE + merged + cross + 'class_map = "lesion=tumour"\n',
                                         "t.toml")))
    assert "`cross.class_map` 'lesion=tumour'" in info.value.message


def test_bench_isolation_and_threads_reach_run_bench_and_the_fingerprint(tmp_path, monkeypatch):
    """A study benches like `segdeploy bench`: each configuration in its own process, with the CPU runtimes on
    the cell's cores, unless the study file says otherwise; both settings are part of a cell's fingerprint."""
    import segdeploy.bench.runner as runner
    from segdeploy.study import cell as cell_module

    default = load_study(study(tmp_path, BASE + "[resources]\nnum_cpus = 3\n"))
    custom = load_study(study(tmp_path, BASE + 'isolate = "none"\nthreads = 1\n', name="c.toml"))
    assert (default.isolate, default.bench_threads) == ("process", 3)
    assert (custom.isolate, custom.bench_threads) == ("none", 1)
    cell = expand(default)[0]
    assert fingerprint(default, cell) != fingerprint(custom, cell)
    seen = []
    monkeypatch.setattr(runner, "run_bench", lambda *a, **kw: seen.append((kw["isolate"], kw["threads"])) or [])
    for config in (default, custom):
        cell_module._bench(config, tmp_path, "synthetic:36", "test")
    assert seen == [("process", 3), ("none", 1)]
    # a timeout reaches run_bench with process isolation and is not part of the fingerprint (it changes no number)
    timed = load_study(study(tmp_path, BASE + "timeout = 90\n[resources]\nnum_cpus = 3\n", name="t.toml"))
    assert timed.timeout == 90.0 and fingerprint(timed, cell) == fingerprint(default, cell)
    monkeypatch.setattr(runner, "run_bench", lambda *a, **kw: seen.append(kw["timeout"]) or [])
    cell_module._bench(timed, tmp_path, "synthetic:36", "test")
    assert seen[-1] == 90.0


def test_a_cells_rows_carry_typed_study_fields_and_keep_the_bench_values():
    from segdeploy.records import BenchRow, StudyCell
    from segdeploy.study.cell import _tag
    from segdeploy.study.plan import Cell

    cell = Cell("unet-tiny-ph2-f1-lr0.001", "unet-tiny", "ph2", "ph2", 1, 1e-3)
    bench = {"schema": "segdeploy.bench/3", "model": "unet-tiny", "dataset": "ph2-heldout", "backend": "onnxruntime",
             "precision": "int8", "status": "ok", "dice": 0.812, "trivial_dice": {"all_bg": 0.0, "all_fg": 0.31},
             "per_image": "cells/x/per_image.npz", "gradcam": None}
    curve = {"loss": [0.9, 0.5], "val_dice": [0.6, 0.8], "stopped_early": False, "best_epoch": 2}
    row = _tag(bench, cell, 0.8, target="ph2-heldout", train_curve=curve)
    assert {k: row[k] for k in bench} == bench  # bench's values (and its unknown keys) unchanged
    assert row["study"] == cell.study_field() and row["train_curve"] == curve
    assert (row["val_dice"], row["train_dataset"], row["target"]) == (0.8, "ph2", "ph2-heldout")
    typed = BenchRow.from_json(row)
    assert typed.study == StudyCell(model="unet-tiny", dataset="ph2", fold=1, lr=1e-3, cell_id=cell.cell_id)
    assert typed.extra == {"gradcam": None} and typed.trivial_dice == {"all_bg": 0.0, "all_fg": 0.31}
