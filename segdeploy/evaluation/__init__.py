"""Accuracy, a layer below every stage.

``metrics``: Dice/IoU/HD95 at original resolution, per-image confusion counts and scores recomputed from them.
``evaluate``: the one preprocess -> infer -> restore -> score path that train, export, bench and xai call
(``from segdeploy.evaluation.evaluate import evaluate, Evaluation, torch_predictor``).
Submodules are imported where used (they load scipy and torch).
"""
