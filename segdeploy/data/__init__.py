"""Datasets: folder layout, registry (``synthetic``), checks, splits and transforms.

Importing this package does not import torch; :mod:`segdeploy.data.transforms` does.
"""

from segdeploy.data.check import Problem, check_dataset, dataset_info
from segdeploy.data.folder import Sample, SegDataset, list_datasets, open_dataset, register_dataset
from segdeploy.data.splits import make_splits

__all__ = ["Problem", "Sample", "SegDataset", "check_dataset", "dataset_info", "list_datasets", "make_splits",
           "open_dataset", "register_dataset"]
