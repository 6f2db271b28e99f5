"""DeepLab Studio: a desktop annotation assistant for semantic segmentation."""

__version__ = "0.1.0"
