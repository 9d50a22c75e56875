"""The command line: ``kdlab <subcommand>`` (:mod:`kdlab.cli.main`) and ``kdlab list`` (:mod:`kdlab.cli.listing`)."""

from kdlab.cli.main import entry, main

__all__ = ["entry", "main"]
