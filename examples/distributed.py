"""The case study on N processes with ignite.distributed: the same monitoring code, DDP underneath.

    python examples/distributed.py --nproc 2                     # 2 processes, gloo on CPU
    torchrun --nproc_per_node 2 examples/distributed.py          # the same, started by torchrun
    python examples/distributed.py --nproc 2 --resume            # continue a killed run on 2 processes
    python examples/distributed.py --nproc 2 --fsdp              # the model sharded with FSDP2 instead of DDP

Each process trains on its share of every batch (DistributedSampler; batch 64 in total) and
validates on its share of the validation set (no padding, so the metrics equal one process's);
Ignite's metrics are reduced across processes, every process takes the same early-stopping
decision, and only rank 0 writes files and shows progress.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binary_classification import checkpoint_every, make_data, make_model  # noqa: E402

import monitor  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2, help="processes to start (ignored under torchrun)")
    parser.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (GPU)")
    parser.add_argument("--run-dir", default="reports/distributed")
    parser.add_argument("--max-epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64, help="total over all processes")
    parser.add_argument("--no-shuffle", action="store_true", help="fixed batch order (to compare with 1 process)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of each process")
    parser.add_argument("--recovery", action="store_true",
                        help="roll back a NaN or a loss spike, cut the rate and go on (monitor.Recovery)")
    parser.add_argument("--keep-every", type=int, default=None, metavar="N",
                        help="with --recovery, a good copy every N iterations (default: as often as 1%% of the "
                             "time allows)")
    parser.add_argument("--skip-step", action="store_true",
                        help="leave out a step whose loss is NaN or a spike, on every rank (monitor.SkipStep)")
    parser.add_argument("--fsdp", action="store_true",
                        help="shard the model with FSDP2 (torch.distributed.fsdp.fully_shard) instead of DDP")
    parser.add_argument("--shards", choices=("dcp", "full"), default="dcp",
                        help="with --fsdp, the last checkpoint: each process's shards in a folder (dcp), or the "
                             "full state written by rank 0 (full)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--checkpoint-every", default=None, metavar="WHEN",  # text: args go to each process
                        help="'epoch', 'iteration:N' or seconds (default: monitor's budget)")
    return parser.parse_args(argv)


def training(local_rank: int, args: argparse.Namespace, customize: Callable[[Engine], None] | None = None) -> None:
    rank = idist.get_rank()
    if "OMP_NUM_THREADS" not in os.environ:  # torchrun sets it to 1; idist.Parallel's processes share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // idist.get_nproc_per_node()))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format=f"[{rank}] %(message)s")
    logging.getLogger("ignite").setLevel(logging.WARNING)
    torch.manual_seed(args.seed)  # the same initial weights on every process
    train_set, val_set = make_data(args.seed)
    world = idist.get_world_size()
    if args.batch_size % world and rank == 0:  # auto_dataloader gives each process batch_size // world
        logging.getLogger(__name__).warning(
            "--batch-size %d is not divisible by %d processes: each takes %d, %d in all (DistributedSampler "
            "gives each process an equal share). A resume still trains each sample of its epoch once, but the "
            "global batch differs from the run's %d; use a multiple of %d (e.g. %d) to keep it.",
            args.batch_size, world, args.batch_size // world, args.batch_size // world * world, args.batch_size,
            world, (args.batch_size // world + 1) * world)
    # Under idist.Parallel the workers are spawned (its start method is inherited): kept for the whole run,
    # they import torch once, not at every epoch.
    train_loader = idist.auto_dataloader(train_set, batch_size=args.batch_size, shuffle=not args.no_shuffle,
                                         num_workers=args.workers, persistent_workers=args.workers > 0)
    val_loader = monitor.runtime.validation_loader(val_set, batch_size=args.batch_size)

    model = make_model()
    if args.fsdp:  # each layer's parameters sharded across the processes, then the whole
        from torch.distributed.fsdp import fully_shard

        for layer in model.modules():
            if isinstance(layer, nn.Linear):
                fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    # DDP when there are several processes (and the model is not sharded)
    trainer = monitor.build_trainer(model, optimizer, loss_fn, skip_step=monitor.SkipStep() if args.skip_step else None)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    if customize is not None:
        customize(trainer)
    run = monitor.attach_monitoring(
        trainer, evaluator, val_loader, run_dir=args.run_dir, objective=monitor.Objective("loss", mode="min"),
        to_save={"model": model, "optimizer": optimizer}, resume=args.resume, overwrite=args.overwrite,
        early_stopping=monitor.EarlyStopping(patience=args.patience),
        checkpoints=monitor.Checkpoints(
            every=None if args.checkpoint_every is None else checkpoint_every(args.checkpoint_every),
            shards=args.shards,
        ),
        # default: a bar on a terminal only
        console=monitor.Console(tqdm_kwargs={"disable": True} if args.no_progress else None),
        parts=[monitor.Recovery(keep_every=args.keep_every)] if args.recovery else [],
        record=monitor.Record(seed=args.seed, hparams={
            "lr": 0.01, "momentum": 0.9, "batch_size": args.batch_size, "processes": idist.get_world_size(),
            **({"sharded": "fsdp2"} if args.fsdp else {})}),
    )
    with run:
        trainer.run(train_loader, max_epochs=args.max_epochs)
    if rank == 0:
        best = "no validation yet" if run.best.best_value is None else \
            f"best val_loss {run.best.best_value:.4f} at epoch {run.best.best_epoch}"
        print(f"Run written to {run.run_dir} by {idist.get_world_size()} processes: {run.status.value}, {best}")


def launch(args: argparse.Namespace, customize: Callable[[Engine], None] | None = None,
           start_method: str = "spawn") -> None:
    """Start the processes (or join torchrun's) and run :func:`training` in each.

    ``start_method="fork"`` starts them from this process's memory (no second import of torch: seconds
    a launch), safe only while this process has started no thread pool and no CUDA context.
    """
    under_torchrun = "WORLD_SIZE" in os.environ
    # FSDP2 needs a process group, even of one process
    nproc = None if under_torchrun or (args.nproc <= 1 and not args.fsdp) else args.nproc
    backend = args.backend if under_torchrun or nproc else None
    # Ignite's default port (2222) may be taken by another run on this machine: pick a free one.
    port = {"master_port": _free_port()} if nproc else {}
    with idist.Parallel(backend=backend, nproc_per_node=nproc, start_method=start_method, **port) as parallel:
        parallel.run(training, args, customize)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    launch(parse_args(sys.argv[1:]))
