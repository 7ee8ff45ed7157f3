"""The ``qscope-lab`` command line: one module per subcommand, ``options`` for what they share."""

from .main import build_parser, main

__all__ = ["main", "build_parser"]
