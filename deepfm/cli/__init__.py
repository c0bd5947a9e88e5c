"""The ``deepfm`` command line, a thin layer over the library."""

from deepfm.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
