"""segdeploy: accuracy and deployment cost of medical image segmentation models."""

__version__ = "0.1.0"
