"""The best model of a run as one plain ``state_dict`` file, for inference or sharing.

A run's best checkpoint already is the model's ``state_dict`` (Ignite's ``Checkpoint`` saves a single
object as itself; a DDP model unwrapped, a sharded model's full state gathered): an unsharded model of
the same architecture loads it with ``load_state_dict``. Exporting checks it against its checksum and
the manifest and copies it without monitor's trailer, so no torch is needed here.

A sharded model's best (``Checkpoints(shards="dcp")``, the default) is a folder of each process's shards
beside the file: exporting checks every file of it against the folder's manifest and gathers the
shards into one ``state_dict`` with PyTorch's own ``dcp_to_torch_save`` (torch is imported then only).
"""
from __future__ import annotations

from pathlib import Path
from typing import IO

from monitor.review.load import Run, load_run
from monitor.store._io import atomic_write
from monitor.store.layout import shards_of
from monitor.store.manifest import Manifest, check_file, folder_problem, read_trailer

__all__ = ["export_best"]

_CHUNK = 1 << 22


def export_best(run: Run | str | Path, output: str | Path) -> Path:
    """Write ``run``'s best checkpoint, checked whole, to ``output`` (atomically); return its path.

    Raises:
        ValueError: the run has no best checkpoint yet, or it is damaged (naming the file).

    Examples:
        .. code-block:: python

            export_best("reports/binary_classification", "best.pt")
            model.load_state_dict(torch.load("best.pt"))        # an unsharded model of the same architecture
    """
    run = run if not isinstance(run, (str, Path)) else load_run(run)
    checkpoint = run.best.get("checkpoint")
    if checkpoint is None or not Path(checkpoint).exists():
        raise ValueError(f"{str(run.path)!r} has no best checkpoint to export (no validation made a best yet, "
                         f"or its file is gone: {checkpoint})")
    source = Path(checkpoint)
    problem, _ = check_file(source, Manifest(source.parent).entries().get(source.name))
    if problem is not None:
        raise ValueError(f"The best checkpoint {str(source)!r} is damaged ({problem}); nothing was written.")
    shards = source.with_name(shards_of(source.name))
    if shards.is_dir():
        return _export_shards(shards, Path(output))
    own = read_trailer(source)
    size = own[0] if own is not None else source.stat().st_size

    def copy(f: IO[bytes]) -> None:
        with source.open("rb") as src:
            left = size
            while left:
                chunk = src.read(min(_CHUNK, left))
                if not chunk:
                    raise ValueError(f"{str(source)!r} ended {left} bytes early while it was copied")
                f.write(chunk)
                left -= len(chunk)

    atomic_write(Path(output), copy)
    return Path(output)


def _export_shards(shards: Path, output: Path) -> Path:
    """The model of a sharded best's folder (checked against its manifest) as one ``state_dict`` file."""
    problem = folder_problem(shards)
    if problem is not None:
        raise ValueError(f"The best checkpoint's shards are damaged: {problem}; nothing was written.")
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".tmp-export-") as temp:
        whole = Path(temp) / "whole.pt"
        dcp_to_torch_save(shards, whole)  # every shard read, no process group needed
        model = torch.load(whole, weights_only=True)["model"]
    atomic_write(output, lambda f: torch.save(model, f))
    return output
