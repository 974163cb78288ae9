"""Grad-CAM explanations from a run's PyTorch model (``segdeploy cam``)."""

from segdeploy.xai.gradcam import cam_energy_share, class_cams, find_target_layer, gradcam_run, resolve_layer

__all__ = ["cam_energy_share", "class_cams", "find_target_layer", "gradcam_run", "resolve_layer"]
