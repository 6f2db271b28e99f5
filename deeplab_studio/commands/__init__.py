"""Headless subcommands of the `deeplab-studio` CLI, one module each."""


class CommandError(Exception):
    """Bad input to a subcommand: printed as one line, exit status 2."""
