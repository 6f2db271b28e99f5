"""Headless subcommands of the `deeplab-studio` CLI, one module each."""
