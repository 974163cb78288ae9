"""A study's results file is read by the one results reader: a damaged line in the middle is one clear line naming
the file (it used to be skipped silently, dropping a row from the statistics); a torn last line is skipped with a
warning."""

from __future__ import annotations

import pytest

from segdeploy.errors import SegdeployError
from segdeploy.study.results import RESULTS, read_rows


def test_a_damaged_line_inside_the_results_is_an_error_naming_it(tmp_path):
    path = tmp_path / RESULTS
    path.write_text('{"study": {"cell_id": "a"}, "dice": 0.8}\n{"study": {"cell_id": "b"}, "di\n'
                    '{"study": {"cell_id": "c"}, "dice": 0.7}\n')
    with pytest.raises(SegdeployError) as info:
        read_rows(path)
    assert "line 2" in info.value.message and str(path) in str(info.value)


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / RESULTS
    path.write_text('{"study": {"cell_id": "a"}, "dice": 0.8}\n{"study": {"cell_id": "b"}, "di')
    with pytest.warns(UserWarning, match="line 2 is an incomplete row"):
        rows = read_rows(path)
    assert rows == [{"study": {"cell_id": "a"}, "dice": 0.8}]
