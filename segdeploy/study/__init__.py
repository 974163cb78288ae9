"""The study: a grid of models x datasets x folds x learning rates, run cell by cell, and the statistics over it.

Running it (``segdeploy study init`` / ``study run``):

    study.toml --load_study--> StudyConfig --expand--> cells --executor (local | ray)--> rows --> DIR/results.jsonl

``config`` (the study file), ``plan`` (cells, plan.json), ``cell`` (one cell's pipeline), ``runner`` (the driver),
``executors`` (local, ray), ``results`` (results file, lr selection), ``view`` (live view). The modules import
torch and ray inside functions, so loading and validating a study file is cheap.

Summarising it is :mod:`segdeploy.analysis` (statistics, aggregation, summary, cost, published accuracy).
"""
