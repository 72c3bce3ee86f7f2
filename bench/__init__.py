"""vgg-bench: re-run the VGG paper's ablations and modern ones, tracked in MLflow."""

__version__ = "0.1.0"
