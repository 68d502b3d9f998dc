"""The command line: one module per area (db, pipeline, dq, ...), each with COMMANDS; main joins them."""

from opsconsole.cli.main import main

__all__ = ["main"]
