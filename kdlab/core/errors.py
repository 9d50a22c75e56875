"""User-facing errors: each carries a one-line message and the process exit code the CLI uses."""


class KdlabError(Exception):
    """An error caused by the user's input or environment, reported as one line without a traceback."""

    exit_code = 1


class ConfigError(KdlabError):
    """Invalid configuration: unknown key, wrong type, unknown component name."""

    exit_code = 2


class DataError(KdlabError):
    """A data set is missing, malformed or inconsistent with the model."""


class CheckpointError(KdlabError):
    """A checkpoint is missing, unreadable, corrupted or does not match the requested model/data."""


class DivergenceError(KdlabError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


class RunFolderError(KdlabError):
    """A run folder is in a state that the requested action would damage (e.g. overwrite finished work)."""


class StudyFailedError(KdlabError):
    """Runs of a study failed; the study's results (tables of the runs that finished) are in ``result``."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


class StorageError(KdlabError):
    """A file could not be written or read back: disk full, read-only or missing folder, no permission."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's or a container's stop), raised in the main thread by the handler that the
    ``kdlab`` command (and a study's worker process) installs: it unwinds as Ctrl-C's KeyboardInterrupt does, so
    ``finally`` blocks run, locks are released and worker processes are stopped; the command then ends with exit
    status 143 (128 + SIGTERM) where Ctrl-C's is 130."""

    exit_code = 143


def interrupted_line(e: KeyboardInterrupt, what_next: str) -> str:
    """kdlab's one line for an interrupt (``interrupted``) or SIGTERM (``terminated``): ``kdlab: ...; what_next``."""
    return f"kdlab: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; {what_next}"


def mark_reported(e: BaseException) -> None:
    """Note on ``e`` that its one line was logged already (the command line then does not print it again)."""
    e.kdlab_reported = True


def was_reported(e: BaseException) -> bool:
    return bool(getattr(e, "kdlab_reported", False))
