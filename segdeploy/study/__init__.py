"""The study: a grid of models x datasets x folds x learning rates, trained, exported and benchmarked cell by cell.

    study.toml --load_study--> StudyConfig --expand--> cells --executor (local | ray)--> rows --> DIR/results.jsonl

``segdeploy study init`` writes a commented study file from a template, ``segdeploy study run STUDY --out DIR``
runs it (resumable at any moment). The modules import torch and ray inside functions, so loading and validating a
study file is cheap.
"""
