"""Icons and demo photographs, shipped in the wheel as the package `deeplab_studio.resources`.

This folder stays at the top of the repository; `pyproject.toml` maps it onto
`deeplab_studio.resources`, so code reads it with
`importlib.resources.files("deeplab_studio.resources")` in a checkout, an editable install and a
wheel alike. No code lives here.
"""
