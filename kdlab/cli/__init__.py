"""The command line: ``kdlab <subcommand>`` (:mod:`kdlab.cli.main`) and ``kdlab list`` (:mod:`kdlab.cli.listing`)."""

from kdlab.cli.main import build_parser, entry, main

__all__ = ["build_parser", "entry", "main"]
