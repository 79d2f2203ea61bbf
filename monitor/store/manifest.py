"""Checksums of checkpoints: each file carries its own, and the manifest lists them all.

``torch.load`` happily loads a file with a flipped byte in a tensor as wrong weights; a checksum
recorded when the file was written catches it. Every checkpoint ends with a 26-byte trailer (a
marker, the size and the CRC-32 of what precedes it), so it can be verified on its own even when
the manifest is lost or damaged; ``torch.load`` reads the zip archive before it and ignores it.
``checkpoints/manifest.json`` also lists each file's size and CRC-32; its entry is written before the
file is renamed into place.
"""
from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import IO, Any

from monitor.store._io import atomic_write_json
from monitor.store.layout import MANIFEST_NAME

__all__ = ["Manifest", "ChecksumWriter", "CheckpointError", "MANIFEST_NAME", "trailer", "read_trailer", "check_file",
           "file_checksum", "folder_problem"]

_TRAILER_MARK = b"monitor-crc32\x00"
_TRAILER = struct.Struct("<QI")  # size of what precedes, CRC-32 of it
TRAILER_SIZE = len(_TRAILER_MARK) + _TRAILER.size


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read or does not fit; the message names the path."""


def trailer(size: int, crc32: int) -> bytes:
    """The bytes appended to a checkpoint of ``size`` bytes whose CRC-32 is ``crc32``."""
    return _TRAILER_MARK + _TRAILER.pack(size, crc32)


def read_trailer(path: Path) -> tuple[int, int] | None:
    """``(size, crc32)`` from the trailer of the file at ``path``; ``None`` if it has none."""
    total = path.stat().st_size
    if total < TRAILER_SIZE:
        return None
    with open(path, "rb") as f:
        f.seek(total - TRAILER_SIZE)
        tail = f.read(TRAILER_SIZE)
    if not tail.startswith(_TRAILER_MARK):
        return None
    size, crc = _TRAILER.unpack(tail[len(_TRAILER_MARK):])
    return (size, crc) if size == total - TRAILER_SIZE else None


def check_file(path: Path, entry: Mapping[str, Any] | None = None) -> tuple[str | None, bool]:
    """``(problem, verified)`` for the checkpoint at ``path``: its content against its own trailer and
    against its manifest ``entry`` (if any). ``problem`` is ``None`` when both agree; ``verified`` is
    False when there was nothing to check against (another tool's file, or an older monitor's)."""
    own = read_trailer(path)
    expected = ([("its own checksum", own)] if own else []) + (
        [("the manifest", (entry["size"], entry["crc32"]))] if entry else []
    )
    size, crc = file_checksum(path, limit=own[0] if own else None)
    for source, (expected_size, expected_crc) in expected:
        if size != expected_size:
            return f"size {size} bytes, {source} says {expected_size}", True
        if crc != expected_crc:
            return f"checksum {crc:08x}, {source} says {expected_crc:08x}", True
    return None, bool(expected)


class ChecksumWriter:
    """A write-only file wrapper computing the size and CRC-32 of what passes through."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.size = 0
        self.crc32 = 0
        self.error: OSError | None = None  # torch.save turns a write error into a vague RuntimeError

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.crc32 = zlib.crc32(view, self.crc32)
        self.size += view.nbytes
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self._f.flush()


def file_checksum(path: Path, chunk: int = 1 << 22, limit: int | None = None) -> tuple[int, int]:
    """(size, CRC-32) of the file at ``path``, or of its first ``limit`` bytes."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(chunk if limit is None else min(chunk, limit - size)):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, crc


def folder_problem(folder: Path) -> str | None:
    """What is wrong with a checkpoint folder (a sharded model's shards: missing, no manifest, a file
    missing or changed), or ``None`` when each file matches its size and CRC-32 in the folder's manifest.

    Examples:
        >>> folder_problem(Path("no/such.shards"))
        "its shards folder 'no/such.shards' is missing or was never completed"
    """
    manifest = folder / MANIFEST_NAME
    if not folder.is_dir() or not manifest.is_file():
        return f"its shards folder {str(folder)!r} is missing or was never completed"
    try:
        files = json.loads(manifest.read_text())
    except (OSError, ValueError) as e:
        return f"the manifest of {str(folder)!r} cannot be read ({e})"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{str(path)!r} is missing"
        problem, _ = check_file(path, entry)
        if problem is not None:
            return f"{str(path)!r} does not match its size and CRC-32 in the folder's manifest ({problem})"
    return None


class Manifest:
    """``checkpoints/manifest.json``: ``{filename: {"size": ..., "crc32": ...}}``.

    Examples:
        .. code-block:: python

            manifest = Manifest(run_dir / "checkpoints")
            manifest.record("last_epoch=3.pt", size=1024, crc32=0x1234abcd)
            manifest.problem(run_dir / "checkpoints" / "last_epoch=3.pt")   # None when whole
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME

    def entries(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}  # written atomically, so only a hand edit gets here; treat files as unlisted
        return data if isinstance(data, dict) else {}

    def record(self, filename: str, *, size: int, crc32: int, dropping: Collection[str] = ()) -> None:
        """Add ``filename`` and drop ``dropping`` (files about to be deleted) in one atomic write."""
        entries = {k: v for k, v in self.entries().items() if k not in dropping}
        entries[filename] = {"size": size, "crc32": crc32}
        atomic_write_json(self.path, entries)

    def forget(self, filenames: list[str]) -> None:
        entries = self.entries()
        if any(name in entries for name in filenames):
            atomic_write_json(self.path, {k: v for k, v in entries.items() if k not in filenames})

    def problem(self, path: Path) -> str | None:
        """Why the file at ``path`` is not the one written (``None``: it is, or nothing says otherwise)."""
        return check_file(path, self.entries().get(path.name))[0]
