"""The checkpoint manifest: size and CRC-32 of every checkpoint, to tell a whole file from a damaged one.

``torch.load`` happily loads a file with a flipped byte in a tensor as wrong weights; a checksum
recorded when the file was written catches it. The entry is written before the file is renamed into
place, so every checkpoint under its final name has an entry describing what it should hold.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import IO, Any

from monitor._io import atomic_write_json
from monitor.layout import MANIFEST_NAME

__all__ = ["Manifest", "ChecksumWriter", "MANIFEST_NAME"]


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


def file_checksum(path: Path, chunk: int = 1 << 22) -> tuple[int, int]:
    """(size, CRC-32) of the file at ``path``."""
    crc, size = 0, 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
            size += len(block)
    return size, crc


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
        """Why the file at ``path`` is not the one recorded (``None``: it is, or it is unlisted)."""
        entry = self.entries().get(path.name)
        if entry is None:
            return None
        size, crc = file_checksum(path)
        if size != entry["size"]:
            return f"size {size} bytes, recorded {entry['size']}"
        if crc != entry["crc32"]:
            return f"checksum {crc:08x}, recorded {entry['crc32']:08x}"
        return None
