"""Fault catalogue, files: torn JSON lines, disk full and read-only writes, file permissions."""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

from conftest import FAST_BENCH, assert_one_line_error, cli, fill_disk_after
from segdeploy.errors import SegdeployError
from segdeploy.fileio import append_jsonl, atomic_write_json, read_jsonl

ROWS = [{"run": "a", "dice": 0.5}, {"run": "b", "dice": 0.25}]
TORN = '{"run": "c", "dice": 0.1'  # what ENOSPC or kill -9 leaves of a row


def _write_rows(path, rows, tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_append_after_a_torn_tail_starts_a_fresh_line(tmp_path):
    path = tmp_path / "results.jsonl"
    _write_rows(path, ROWS, TORN)
    new = {"run": "d", "dice": 0.75}
    with pytest.warns(UserWarning, match=r"results\.jsonl: line 3 .*incomplete"):
        append_jsonl(path, new)
    assert read_jsonl(path) == [*ROWS, new]  # the new row is not glued onto the fragment
    assert path.read_text().endswith("\n") and len(path.read_text().splitlines()) == 3
    # a complete row that only lacks its newline (another tool wrote it) is kept, without a warning
    with open(path, "a") as f:
        f.write(json.dumps({"run": "e"}))
    append_jsonl(path, {"run": "f"})
    assert [r["run"] for r in read_jsonl(path)] == ["a", "b", "d", "e", "f"]


def test_a_torn_last_line_is_skipped_with_a_warning_naming_it(tmp_path):
    path = tmp_path / "results.jsonl"
    _write_rows(path, ROWS, TORN)
    with pytest.warns(UserWarning, match=r"results\.jsonl: line 3 "):
        assert read_jsonl(path) == ROWS


@pytest.mark.parametrize("budget", [0, 7, 20])
def test_disk_full_during_append_leaves_the_row_absent_and_says_so(tmp_path, monkeypatch, budget):
    path = tmp_path / "results.jsonl"
    _write_rows(path, ROWS)
    before = path.read_bytes()
    fill_disk_after(monkeypatch, budget)
    with pytest.raises(SegdeployError) as info:
        append_jsonl(path, {"run": "c", "dice": 0.125})
    assert str(path) in str(info.value) and "No space left" in str(info.value) and "re-run" in str(info.value)
    assert path.read_bytes() == before  # the row is absent, not torn
    monkeypatch.undo()
    append_jsonl(path, {"run": "c"})
    assert [r["run"] for r in read_jsonl(path)] == ["a", "b", "c"]


def test_read_only_file_system_is_one_error(tmp_path, monkeypatch):
    from segdeploy import fileio

    def read_only(file, mode="r", *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(file))

    monkeypatch.setattr(fileio, "open", read_only, raising=False)
    path = tmp_path / "results.jsonl"
    with pytest.raises(SegdeployError, match="Read-only file system"):
        append_jsonl(path, ROWS[0])
    monkeypatch.setattr(fileio.tempfile, "mkstemp", lambda **kw: read_only(kw.get("dir")))
    with pytest.raises(SegdeployError, match=r"model\.json: cannot write \(Read-only file system\)"):
        atomic_write_json(tmp_path / "model.json", {"a": 1})


@pytest.mark.slow
def test_bench_and_check_keep_working_after_a_torn_tail(tiny_run_copy, tmp_path):
    results, baseline = tmp_path / "results.jsonl", tmp_path / "baseline.json"
    bench = ["bench", tiny_run_copy, *FAST_BENCH, "--backends", "torch", "--precisions", "fp32", "--results", results]
    assert cli(*bench).exit_code == 0
    with open(results, "a") as f:
        f.write(TORN)  # the disk filled up during the next row
    # two more configurations (the batch is part of a row's key)
    outputs = [cli(*bench, "--batch", batch) for batch in ("1", "3")]
    assert [r.exit_code for r in outputs] == [0, 0], [r.output for r in outputs]
    assert "warning:" in outputs[0].output and "line 2" in outputs[0].output  # the torn row is named
    rows = read_jsonl(results)
    assert [r["batch"] for r in rows] == [2, 1, 3] and all(r["status"] == "ok" for r in rows)
    assert cli("check", results, "--baseline", baseline, "--write-baseline").exit_code == 0
    assert cli("check", results, "--baseline", baseline).exit_code == 0


@pytest.mark.slow
def test_disk_full_in_bench_ends_with_one_line_and_keeps_finished_rows(tiny_run_copy, tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    bench = ["bench", tiny_run_copy, *FAST_BENCH, "--backends", "torch", "--precisions", "fp32", "--results", results]
    assert cli(*bench).exit_code == 0
    finished = results.read_bytes()
    fill_disk_after(monkeypatch, 50)
    result = cli(*bench, "--batch", "1")
    assert_one_line_error(result, names=results, says="No space left on device")
    assert results.read_bytes() == finished  # the first row intact, nothing torn after it
    monkeypatch.undo()
    assert cli(*bench, "--batch", "1").exit_code == 0 and [r["batch"] for r in read_jsonl(results)] == [2, 1]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_run_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "model.json", {"a": 1})
        append_jsonl(tmp_path / "history.jsonl", {"epoch": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "history.jsonl").stat().st_mode) == 0o666 & ~umask


def test_trained_run_files_are_not_private(tiny_run):
    # the session's umask decides, as for any other tool: no file is more private than a plain new file
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.json", "model.safetensors"):
        assert stat.S_IMODE((tiny_run / name).stat().st_mode) == 0o666 & ~umask, name
