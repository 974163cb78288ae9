"""Accuracy and deployment cost of exported models.

``latency`` (trtexec-style timing), ``memory`` (peak memory),
``runner.run_bench`` (one JSON line per run x backend x precision, resumable), ``table.render`` (rich tables).
Submodules are imported where used so that ``segdeploy --help`` does not load scipy.
"""
