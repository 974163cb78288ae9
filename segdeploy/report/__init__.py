"""Accuracy regression gate over bench results (``segdeploy check``)."""

from segdeploy.report.check import Finding, check_results, load_baseline, load_results, make_baseline

__all__ = ["Finding", "check_results", "load_baseline", "load_results", "make_baseline"]
