"""The canvas: the image and label layers and the mouse-to-tool view."""
