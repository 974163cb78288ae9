"""Comma-separated options: one parser for every command."""

from __future__ import annotations

from segdeploy.records import comma_list


def test_comma_list_drops_blanks_and_repeats_in_order():
    assert comma_list(" fp32, fp16,,fp32 ,int8,") == ["fp32", "fp16", "int8"]
    assert comma_list("") == [] and comma_list(" , ") == []
    # the Python API takes lists, whose items may themselves be comma lists
    assert comma_list(["torch", "onnxruntime,torch", " tensorrt "]) == ["torch", "onnxruntime", "tensorrt"]
