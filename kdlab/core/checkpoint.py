"""Checkpoints: written atomically (temp file + rename), verified by checksum, self-describing.

A checkpoint stores the model's registry name, parameters, class count and input shape, and the resolved run
config, so that it can be rebuilt without knowing where it came from.

Format ``kdlab-checkpoint-2`` is a plain ``torch.save`` zip file (``torch.load(path, weights_only=True)`` opens
it): the saved payload's keys plus ``format`` and ``sha256``, a SHA-256 per section (``model_state``,
``objective_state``, ``optimizer_state``, and ``meta``: every other key) over the section's content (each
tensor's dtype, shape and bytes, a canonical encoding of everything else).  :func:`load_checkpoint` (resume)
verifies every section; :func:`load_weights` memory-maps the file and reads and verifies only the model's
weights and ``meta``, :func:`load_metadata` only ``meta``: optimizer and objective tensors (a SoTeacher
teacher's consistency buffer) are never read.  Format ``kdlab-checkpoint-1`` (a JSON header with the SHA-256 of
a ``torch.save`` body) is still read, as a whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import torch

from kdlab.core.errors import CheckpointError, StorageError

FORMAT = "kdlab-checkpoint-2"
FORMAT_1 = "kdlab-checkpoint-1"  # JSON header line + torch.save body; read, no longer written
SECTIONS = ("model_state", "objective_state", "optimizer_state")  # each verified on its own; "meta": the rest
META = "meta"
_RESERVED = ("format", "sha256")  # the file's own keys, beside the payload's
_ZIP_MAGIC = b"PK\x03\x04"


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()  # mkstemp creates 0600 files; results should be as readable as any other file


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames in ``folder`` durable across a power loss, not only a kill (POSIX; a no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # file systems that cannot sync a folder
    finally:
        os.close(fd)


class _Recording:
    """The file handed to a writer, remembering the first storage error (OSError) its writes met: a writer may
    raise something else in its place (torch.save's C++ writer turns it into ``RuntimeError: [enforce fail at
    inline_container.cc ...] unexpected pos``, which names neither the file nor the cause)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def _recorded(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return call(*args)
        except OSError as e:
            self.error = self.error or e
            raise

    def write(self, data: Any) -> int:
        return self._recorded(self._f.write, data)

    def flush(self) -> None:
        self._recorded(self._f.flush)

    def __getattr__(self, name: str) -> Any:  # fileno, tell, seek, ...
        return getattr(self._f, name)


def _cannot_write(what: str, e: OSError) -> StorageError:
    return StorageError(f"cannot write {what}: {e.strerror or e}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], what: str | None = None) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it, then rename it to ``path``: readers see the
    old file or the complete new one, never a partial one.

    A storage error (disk full, quota, I/O error) raises :class:`StorageError` naming ``what`` (default: the
    path) and the cause, also when the writer turned it into another exception; the temporary file is removed
    and the old file, if any, is untouched."""
    path = Path(path)
    what = what or str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _cannot_write(what, e) from e
    sink: _Recording | None = None
    try:
        os.fchmod(fd, _MODE)
        with os.fdopen(fd, "wb") as f:
            sink = _Recording(f)
            write(sink)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = e if isinstance(e, OSError) else sink.error if sink is not None and isinstance(e, Exception) \
            else None
        if cause is None:  # an interrupt, or the writer's own failure
            raise
        raise _cannot_write(what, cause) from cause


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


_CPU = torch.device("cpu")


def _atom(h: Any, tag: bytes, data: bytes) -> None:
    h.update(tag + len(data).to_bytes(8, "little") + data)


def _feed(h: Any, obj: Any) -> None:
    """Hash ``obj``'s content in a canonical encoding: what ``torch.save`` then ``torch.load`` gives back hashes
    the same, whatever the pickle's bytes or the storages' layout in the file."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
            raise TypeError(f"cannot checksum a {t.layout} {t.device.type} tensor")
        _atom(h, b"T", f"{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():  # the byte count follows from dtype and shape
            flat = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
            h.update(memoryview(flat.view(torch.uint8).numpy()))
    elif obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"b1" if obj else b"b0")
    elif isinstance(obj, int):
        _atom(h, b"I", str(int(obj)).encode())
    elif isinstance(obj, float):
        h.update(b"F" + struct.pack("<d", obj))
    elif isinstance(obj, complex):
        h.update(b"C" + struct.pack("<dd", obj.real, obj.imag))
    elif isinstance(obj, str):
        _atom(h, b"S", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, bytes | bytearray):
        _atom(h, b"Y", bytes(obj))
    elif isinstance(obj, torch.dtype | torch.device):
        _atom(h, b"d" if isinstance(obj, torch.dtype) else b"v", str(obj).encode())
    elif type(obj) in (list, tuple, torch.Size):
        h.update({list: b"[", tuple: b"(", torch.Size: b"Z"}[type(obj)] + len(obj).to_bytes(8, "little"))
        for v in obj:
            _feed(h, v)
    elif type(obj) in (dict, OrderedDict):
        h.update((b"D" if type(obj) is dict else b"O") + len(obj).to_bytes(8, "little"))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
        version = getattr(obj, "_metadata", None)  # a state dict's module versions: load_state_dict reads them
        if version is not None:
            h.update(b"M")
            _feed(h, version)
    else:
        raise TypeError(f"cannot checksum a value of type {type(obj).__name__}")


def _digest(obj: Any) -> str:
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _section_of(key: str) -> str:
    return key if key in SECTIONS else META


def _sections(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload split into its checksummed sections (``meta``: every key not in SECTIONS, in order)."""
    out = {name: payload[name] for name in SECTIONS if name in payload}
    out[META] = {k: v for k, v in payload.items() if k not in SECTIONS}
    return out


def _to(obj: Any, device: torch.device, memo: dict, copy: bool = False) -> Any:
    """``obj`` with its tensors on ``device`` (``copy``: copied even when already there, so nothing refers to the
    file they were mapped from); the same tensor view met twice (tied weights) is moved once."""
    if isinstance(obj, torch.Tensor):
        if obj.device == device and not copy:
            return obj
        key = (obj.device, obj.untyped_storage().data_ptr(), obj.storage_offset(), tuple(obj.shape), obj.stride(),
               obj.dtype)
        if key not in memo:
            memo[key] = obj.detach().to(device, copy=copy)
        return memo[key]
    if type(obj) is dict:
        return {k: _to(v, device, memo, copy) for k, v in obj.items()}
    if type(obj) is OrderedDict:
        out = OrderedDict((k, _to(v, device, memo, copy)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_to(v, device, memo, copy) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any], name: str | os.PathLike | None = None) -> None:
    """Write ``payload`` atomically in format 2: every tensor moved to the CPU once, each section's SHA-256
    taken over those CPU tensors, which are the ones saved.  ``name``: the file an error names (default
    ``path``; a staging file's destination).  A storage error raises :class:`StorageError`, ``cannot write
    checkpoint <name>: <cause>``."""
    clash = [k for k in _RESERVED if k in payload]
    if clash:
        raise ValueError(f"checkpoint payload key {clash[0]!r} is reserved")
    cpu = _to(dict(payload), _CPU, {})
    digests = {section: _digest(part) for section, part in _sections(cpu).items()}
    atomic_write(path, lambda f: torch.save({"format": FORMAT, "sha256": digests, **cpu}, f),
                 what=f"checkpoint {name or path}")


def _corrupted(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} is corrupted or truncated ({why})")


def _read_format_1(path: Path, raw: bytes, map_location: Any) -> dict[str, Any]:
    """A format-1 payload from the file's bytes ``raw``, verified (the whole file is hashed)."""
    head, sep, body = raw.partition(b"\n")
    try:
        header = json.loads(head) if sep else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("format") != FORMAT_1:
        raise CheckpointError(f"{path} is not a kdlab checkpoint (unknown format)")
    if len(body) != header.get("size") or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise _corrupted(path, "checksum mismatch")
    try:
        payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise CheckpointError(f"cannot load checkpoint {path}: {type(e).__name__}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} is not a kdlab checkpoint (no model description)")
    return payload


def _same_file(f: IO[bytes]) -> str | None:
    """A path to the file open as ``f`` (torch reads a memory-mapped file by path): the same file even when a
    new checkpoint replaces it at its name meanwhile (a run still training), where available."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        candidate = f"{folder}/{f.fileno()}"
        if os.path.exists(candidate):
            return candidate
    return None


def _read(path: Path, mmap: bool, map_location: Any = "cpu") -> tuple[str, dict[str, Any]]:
    """(format, top-level dict): format 2 unverified, on the CPU (``mmap``: the file mapped, no tensor read
    yet); format 1 verified, its payload on ``map_location``."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        f = open(path, "rb")  # noqa: SIM115 - held open while torch reads the file through it
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
    with f:
        try:
            magic = f.read(len(_ZIP_MAGIC))
            old = magic + f.read() if magic != _ZIP_MAGIC else None
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror}") from None
        if old is not None:
            return FORMAT_1, _read_format_1(path, old, map_location)
        try:
            raw = torch.load(_same_file(f) or path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as e:  # noqa: BLE001 - a damaged zip archive (bad offsets: OSError) or pickle
            why = f": {e.strerror}" if isinstance(e, OSError) and e.strerror else ""
            raise _corrupted(path, f"torch.load failed: {type(e).__name__}{why}") from None
    fmt = raw.get("format") if isinstance(raw, dict) else None
    if fmt == FORMAT and not isinstance(raw.get("sha256"), dict):
        raise _corrupted(path, "no checksums")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("kdlab-checkpoint-"):
            raise CheckpointError(f"{path}: unknown checkpoint format {fmt!r} (corrupted, or from a newer kdlab)")
        raise CheckpointError(f"{path} is not a kdlab checkpoint (unknown format)")
    return FORMAT, raw


def _verify(path: Path, payload: dict[str, Any], digests: dict, names: Iterable[str]) -> None:
    sections = _sections(payload)
    for name in names:
        if name not in sections or name not in digests:
            raise _corrupted(path, f"section {name} missing")
        try:
            ok = _digest(sections[name]) == digests[name]
        except (TypeError, RuntimeError, ValueError):  # a value that a damaged pickle made up
            ok = False
        if not ok:
            raise _corrupted(path, f"checksum mismatch in {name}")


def _described(path: Path, payload: dict[str, Any]) -> dict[str, Any]:
    if "model" not in payload:
        raise CheckpointError(f"{path} is not a kdlab checkpoint (no model description)")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The whole payload (to resume a run), every section verified, its tensors on ``map_location``."""
    path = Path(path)
    fmt, raw = _read(path, mmap=False, map_location=map_location)
    if fmt == FORMAT_1:
        return _described(path, raw)
    digests = raw["sha256"]
    payload = {k: v for k, v in raw.items() if k not in _RESERVED}
    del raw
    if set(digests) != set(_sections(payload)):
        raise _corrupted(path, "sections do not match their checksums")
    _verify(path, payload, digests, digests)
    _described(path, payload)
    device = torch.device(map_location) if map_location is not None else _CPU
    return payload if device.type == "cpu" else _to(payload, device, {})


def _load_sections(path: str | os.PathLike, names: tuple[str, ...]) -> dict[str, Any]:
    """The keys of sections ``names`` only, verified, in memory on the CPU.  Format 2 is memory-mapped: the other
    sections' tensors are never read (nor copied)."""
    path = Path(path)
    fmt, raw = _read(path, mmap=True)
    keep = {k: v for k, v in raw.items() if k not in _RESERVED and _section_of(k) in names}
    if fmt == FORMAT_1:
        return _described(path, keep)
    digests = raw["sha256"]
    del raw  # the views into the other sections: dropping them unmaps the file once ``keep`` is copied
    keep = _to(keep, _CPU, {}, copy=True)  # verify the very bytes handed out, not the mapped file
    _verify(path, keep, digests, names)
    return _described(path, keep)


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's model spec (``model``), weights (``model_state``, on the CPU) and metadata (``epoch``,
    ``config``, ... : every key but ``objective_state`` and ``optimizer_state``, which are neither read nor
    verified): what it takes to use the model, not to resume its training."""
    out = _load_sections(path, ("model_state", META))
    if "model_state" not in out:
        raise CheckpointError(f"{path} holds no model weights")
    return out


def load_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's metadata only (``model``, ``epoch``, ``config``, ``history``, ...), verified; no tensor of
    the model, objective or optimizer is read."""
    return _load_sections(path, (META,))


# -- checkpoint files by name: ``<name>.pt`` (last, prev, best, epoch_XXX) in a folder of checkpoints ---------------

SUFFIX = ".pt"
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def checkpoint_file(folder: Path, name: str) -> Path:
    """The file of checkpoint ``name`` (``last``, ``best``, ``epoch_030``; a name ending in .pt is taken as is)."""
    return folder / (name if name.endswith(SUFFIX) else name + SUFFIX)


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}"


def checkpoint_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*" + SUFFIX))


def epoch_checkpoint_files(folder: Path) -> dict[int, Path]:
    """Epoch -> file of the ``epoch_XXX.pt`` checkpoints in ``folder``."""
    found = ((int(m.group(1)), f) for f in folder.glob("epoch_*" + SUFFIX) if (m := _EPOCH_FILE.match(f.name)))
    return dict(sorted(found))
