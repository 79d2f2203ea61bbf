"""What a last checkpoint of a sharded (FSDP2) model costs: each process writing its shards into a folder
(``Checkpoints(shards="dcp")``, the default) behind training (``async_save``, the default) or before
training goes on (``background_writes=False``), against the full state gathered and written by rank 0
(``shards="full"``), on 2 gloo processes on the CPU.

    .venv/bin/python benchmarks/bench_sharded_save.py [--params 50e6] [--saves 3] [--nproc 2]

The model: square Linear layers of 2048 features (12 of them for about 50M parameters), each and the
whole ``fully_shard``ed, SGD with momentum (the optimizer state is as large as the model). Per save,
interleaved (async, sync, full, async, ...), medians over ``--saves``: the time the training loop stands
still (an async save: until the shards are copied to the CPU; the others: the whole save), the time
until the folder is committed, the largest resident memory any process reaches during a save above
what it held before (``VmHWM`` after resetting it: the full state gathered on rank 0 shows there; an
async save's CPU copy stays allocated between saves, counted once), and the bytes written. Beside
them, a training step's time, the steps taken while an async save is written (slower: the write
shares the cores), and a save's stall in steps (the default cadence keeps saves under 1% of the
training time, counting the stall and the write behind training).

A second table: a best checkpoint (the model only) kept as a folder of each process's shards (at the
new best each process copies its shards to the CPU and holds them; from the next last checkpoint on
every process writes them: behind training, the default, or before training goes on) against the
full model gathered on rank 0 at the new best (``shards="full"``; rank 0's writer writes the file
behind training). Its stall is the training thread's (the copy at the new best, and the write where
it is not behind training); the write, until the folder or file is complete.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WIDTH = 2048
KINDS = ("async", "sync", "full")
LABELS = ('shards="dcp", behind training (default)', 'shards="dcp", background_writes=False',
          'shards="full" (gathered on rank 0)')
BEST_KINDS = ("best_behind", "best_before", "best_full")
BEST_LABELS = ('shards="dcp": each process\'s shards, written behind training (default)',
               'shards="dcp", background_writes=False', 'shards="full": the model gathered on rank 0')


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: resets VmHWM to the current RSS
        f.write("5")


def rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def worker(rank: int, nproc: int, port: int, args: argparse.Namespace, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(nproc),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=nproc)
    from torch.distributed.fsdp import fully_shard

    from monitor.runtime.shard_folders import BestShards, ShardFolders
    from monitor.runtime.sharded import FullStateModel, FullStateOptimizer
    from monitor.store.layout import checkpoint_of

    torch.manual_seed(0)
    layers = max(1, round(args.params / (WIDTH * WIDTH + WIDTH)))
    model = nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(layers)])
    for layer in model:
        fully_shard(layer)
    fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    x = torch.randn(8, WIDTH)

    def step() -> float:
        started = time.perf_counter()
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        return time.perf_counter() - started

    steps = [step() for _ in range(4)][1:]
    folder = Path(args.workdir)
    names = iter(range(10**6))
    behind = ShardFolders(model, {"optimizer": optimizer}, folder, lambda: f"last_epoch={next(names)}.shards")
    before = ShardFolders(model, {"optimizer": optimizer}, folder, lambda: f"last_epoch={next(names)}.shards",
                          background=False)
    during: list[float] = []  # steps taken while an async save is written

    # Each save returns its stall, the time until it is complete, and the bytes rank 0 wrote.
    def save_dcp(folders: ShardFolders) -> tuple[float, float, int]:
        started = time.perf_counter()
        name = folders.write("model")
        folders.write("optimizer")
        stall = time.perf_counter() - started
        if folders.background:
            during.append(step())
            folders.wait()
        return stall, time.perf_counter() - started, folder_bytes(folder / name) if rank == 0 else 0

    def save_full() -> tuple[float, float, int]:
        started = time.perf_counter()
        written = _save_full()
        stall = time.perf_counter() - started
        return stall, stall, written

    def _save_full() -> int:
        state = {"model": FullStateModel(model).state_dict(),
                 "optimizer": FullStateOptimizer(model, optimizer).state_dict()}
        if rank != 0:
            return 0
        path = folder / "full.pt"
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        return path.stat().st_size

    best_behind = BestShards(model, folder, lambda: f"best_epoch={next(names)}.pt", n_saved=1, listed=list,
                             background=True)
    best_before = BestShards(model, folder, lambda: f"best_epoch={next(names)}.pt", n_saved=1, listed=list)

    def best_dcp(best: BestShards) -> tuple[float, float, int]:
        started = time.perf_counter()
        name = best.state_dict()["shards"]  # at the new best
        best.write_held(kept={checkpoint_of(name)})  # at the next last checkpoint
        stall = time.perf_counter() - started
        best.wait()
        return stall, time.perf_counter() - started, folder_bytes(folder / name) if rank == 0 else 0

    def best_full() -> tuple[float, float, int]:
        started = time.perf_counter()
        state = FullStateModel(model).state_dict()  # at the new best, on every rank
        stall = time.perf_counter() - started
        if rank != 0:
            return stall, stall, 0
        path = folder / "best_full.pt"  # rank 0's writer, behind training
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        return stall, time.perf_counter() - started, path.stat().st_size

    saves = {"results": {"async": lambda: save_dcp(behind), "sync": lambda: save_dcp(before), "full": save_full},
             "best": {"best_behind": lambda: best_dcp(best_behind), "best_before": lambda: best_dcp(best_before),
                      "best_full": best_full}}
    results: dict[str, dict[str, list[tuple[float, float, int, int]]]] = {
        table: {kind: [] for kind in kinds} for table, kinds in saves.items()}
    save_dcp(behind)  # the first async save allocates the CPU copy it keeps: outside the measures
    for _ in range(args.saves):
        for table, kinds in saves.items():
            for kind, save in kinds.items():
                step()  # optimizer state present, as in training
                dist.barrier()
                resident = rss("VmRSS")
                peak_rss_reset()
                stall, total, written = save()
                dist.barrier()
                results[table][kind].append((stall, total, rss("VmHWM") - resident, written))
    dist.barrier()
    behind.close()
    (out / f"rank{rank}.json").write_text(json.dumps({
        **results, "step_s": statistics.median(steps),
        "during_s": statistics.median(during), "params": sum(p.numel() for p in model.parameters())}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=float, default=50e6)
    parser.add_argument("--saves", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Large buffers mapped and unmapped at once (glibc's dynamic threshold would keep freed ones in the
    # heap), so that resident memory follows what a save holds.
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    with tempfile.TemporaryDirectory() as work, tempfile.TemporaryDirectory() as out:
        args.workdir = work
        mp.start_processes(worker, args=(args.nproc, port, args, Path(out)), nprocs=args.nproc, start_method="spawn")
        ranks = [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(args.nproc)]
    step_s = ranks[0]["step_s"]
    print(f"{ranks[0]['params'] / 1e6:.1f}M parameters (fp32, SGD with momentum), {args.nproc} gloo processes, "
          f"a step {step_s * 1e3:.0f} ms; medians of {args.saves} saves each, interleaved")
    print(f"a step while an async save is written: {ranks[0]['during_s'] * 1e3:.0f} ms")
    print("| last checkpoint | stall per save | in steps | until committed | peak memory above before "
          "(rank 0 / others) | written |")
    print("|---|---|---|---|---|---|")
    for kind, label in zip(KINDS, LABELS, strict=True):
        stall, total, peaks, written = medians(ranks, "results", kind, args.saves)
        print(f"| {label} | {stall:.2f} s | {stall / step_s:.1f} | {total:.2f} s | {peaks[0]:.0f} MiB / "
              f"{max(peaks[1:] or [0]):.0f} MiB | {written:.0f} MiB |")
    print("\n| best checkpoint (the model) | stall | until written | peak memory above before (rank 0 / others) "
          "| written |")
    print("|---|---|---|---|---|")
    for kind, label in zip(BEST_KINDS, BEST_LABELS, strict=True):
        stall, total, peaks, written = medians(ranks, "best", kind, args.saves)
        print(f"| {label} | {stall:.2f} s | {total:.2f} s | {peaks[0]:.0f} MiB / {max(peaks[1:] or [0]):.0f} MiB "
              f"| {written:.0f} MiB |")


def medians(ranks: list[dict], table: str, kind: str, saves: int) -> tuple[float, float, list[float], float]:
    """Over the saves: the slowest rank's stall and time to the end, each rank's peak memory (MiB) and
    rank 0's bytes written (MiB), medians."""
    stall = statistics.median(max(r[table][kind][i][0] for r in ranks) for i in range(saves))
    total = statistics.median(max(r[table][kind][i][1] for r in ranks) for i in range(saves))
    peaks = [statistics.median(s[2] for s in r[table][kind]) / 2**20 for r in ranks]
    written = statistics.median(s[3] for s in ranks[0][table][kind]) / 2**20
    return stall, total, peaks, written

if __name__ == "__main__":
    main()
