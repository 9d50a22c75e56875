"""Weights on the Hugging Face hub, fetched only when a config names them: ``weights: hf-hub:ORG/REPO/FILE``.

    weights: hf-hub:timm/resnet18.a1_in1k/model.safetensors
    weights: hf-hub:ORG/REPO/sub/folder/model.pth@v1.0          # a revision: branch, tag or commit
    weights: hf-hub:ORG/REPO@0a1b2c3/model.pth                   # the same, the revision after the repository

The file goes through huggingface_hub's own cache (``hf_hub_download``: ``HF_HUB_CACHE``, else ``HF_HOME/hub``,
else ``~/.cache/huggingface/hub``), so a file fetched once, by kdlab or by ``hf download``, is not fetched again.
With ``HF_HUB_OFFLINE=1`` nothing is fetched: a file that is not in the cache is a one-line error saying how to
fetch it.  Both variables are read when the weights are needed, not when kdlab starts.  Any other failure (no
network, no such repository, file or revision, a gated repository) is a one-line :class:`CheckpointError`.
A plain path is returned as it is (``~`` expanded); whether the file exists is for its reader to say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kdlab.core.errors import CheckpointError
from kdlab.core.log import logger

PREFIX = "hf-hub:"
_TRUE = {"1", "on", "yes", "true"}
_resolved: dict[tuple, Path] = {}  # one look-up per file and process (peers and SFTN branches build a model again)


@dataclass(frozen=True)
class HubFile:
    """A file of a model repository on the Hugging Face hub, at a revision (None: the default branch)."""

    repo: str
    file: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{PREFIX}{self.repo}/{self.file}" + (f"@{self.revision}" if self.revision else "")

    def fetch_hint(self) -> str:
        rev = f" --revision {self.revision}" if self.revision else ""
        return f"hf download {self.repo} {self.file}{rev}"


def is_hub_location(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and location.startswith(PREFIX)


def parse_location(location: str, what: str) -> HubFile:
    """``hf-hub:ORG/REPO/FILE[@REVISION]`` or ``hf-hub:ORG/REPO@REVISION/FILE`` as a :class:`HubFile`."""
    rest = location[len(PREFIX):]
    org, _, tail = rest.partition("/")
    name, _, file = tail.partition("/")
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
    elif "@" in file:
        file, revision = file.split("@", 1)  # after the file, a revision may hold slashes (refs/pr/1)
    if not org or not name or not file or file.endswith("/") or revision == "" or "@" in file:
        raise CheckpointError(f"{what}: {location!r} is not a hub location: write hf-hub:ORG/REPO/FILE "
                              "(optionally @REVISION after the file or the repository)")
    return HubFile(f"{org}/{name}", file, revision)


def offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (now, or when huggingface_hub was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """The hub cache huggingface_hub uses: ``HF_HUB_CACHE`` (read now), else its own default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


class NotOnHub(CheckpointError):
    """The file is not in the repository, or not in the cache where the hub is not asked (offline) or not reached:
    where a library tries several names for its weights file, the next one may be."""


def hub_file(ref: HubFile, what: str) -> Path:
    """The local copy of ``ref`` in the hub cache, fetched if it is not there and ``HF_HUB_OFFLINE`` is not set.
    Failures are one-line CheckpointErrors (:class:`NotOnHub` for a file that is missing or, offline, not cached)."""
    try:
        import huggingface_hub
        from huggingface_hub.utils import (
            EntryNotFoundError,
            GatedRepoError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )
    except ImportError:
        raise CheckpointError(f"{what}: {ref} needs huggingface_hub: pip install huggingface_hub") from None
    cache, off = cache_dir(), offline()
    key = (ref, str(cache), off)
    if key in _resolved and _resolved[key].is_file():
        return _resolved[key]
    try:
        if not off and not isinstance(huggingface_hub.try_to_load_from_cache(
                ref.repo, ref.file, cache_dir=cache, revision=ref.revision), str):
            logger.info(f"{what}: fetching {ref} into the Hugging Face cache {cache}")
        path = Path(huggingface_hub.hf_hub_download(ref.repo, ref.file, revision=ref.revision, cache_dir=cache,
                                                    local_files_only=off))
    except GatedRepoError:
        raise CheckpointError(f"{what}: {ref}: repository {ref.repo} is gated: accept its terms on huggingface.co "
                              "and log in (hf auth login, or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{what}: {ref}: no repository {ref.repo} on the Hugging Face hub (or it is private: "
                              "log in with hf auth login, or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{what}: {ref}: repository {ref.repo} has no revision {ref.revision!r}") from None
    except LocalEntryNotFoundError as e:
        if off:
            raise NotOnHub(f"{what}: {ref} is not in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set: "
                           f"fetch it where there is a network ({ref.fetch_hint()}, with the same HF_HUB_CACHE) "
                           "or unset HF_HUB_OFFLINE") from None
        cause = e.__cause__ or e.__context__
        raise NotOnHub(f"{what}: cannot fetch {ref} (not in the Hugging Face cache {cache}): "
                              f"{_line(cause) if cause else 'the hub cannot be reached'}; fetch it with "
                              f"{ref.fetch_hint()} or give a local weights file") from None
    except EntryNotFoundError:
        raise NotOnHub(f"{what}: {ref}: repository {ref.repo} has no file {ref.file!r}"
                       + (f" at revision {ref.revision!r}" if ref.revision else "")) from None
    except HFValidationError as e:
        raise CheckpointError(f"{what}: {ref} is not a valid hub location: {_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - network, HTTP and disk errors all end the same way
        raise CheckpointError(f"{what}: cannot fetch {ref}: {_line(e)}; fetch it with {ref.fetch_hint()} or give "
                              "a local weights file") from None
    _resolved[key] = path
    return path


def local_weights(location: str | os.PathLike, what: str) -> Path:
    """The local file of a weights location: a plain path as it is (``~`` expanded), or for
    ``hf-hub:ORG/REPO/FILE[@REVISION]`` the file in the Hugging Face cache, fetched unless ``HF_HUB_OFFLINE`` is
    set.  Any failure is a one-line :class:`CheckpointError` about ``what``."""
    if not is_hub_location(location):
        return Path(location).expanduser()
    return hub_file(parse_location(str(location), what), what)
