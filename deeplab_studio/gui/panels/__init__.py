"""Dock panels of the window: the image list and the class list."""
