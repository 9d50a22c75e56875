"""kdlab's messages (progress lines, waits, recoveries) go to the ``kdlab`` logger.

By default it writes them, unadorned, to the current ``sys.stderr``, as the command line shows them.  A library
user silences them with ``logging.getLogger("kdlab").setLevel(logging.WARNING)``, or routes them through the
application's own logging configuration with :func:`propagate_to_root`.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("kdlab")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the message (notebooks and tests replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _install_default_handler() -> None:
    if any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    logger.propagate = False  # an application's root handler would print every line twice


def propagate_to_root() -> None:
    """Drop kdlab's own stderr handler and let the messages reach the root logger's handlers instead."""
    for h in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
        logger.removeHandler(h)
    logger.propagate = True


def info(message: str) -> None:
    logger.info(message)


def warning(message: str) -> None:
    logger.warning(message)


_install_default_handler()
