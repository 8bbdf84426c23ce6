"""The ``cpms`` command line: the server, the demo, migrations and the operators' commands."""

from cpms.cli.main import main

__all__ = ["main"]
