"""What only a GPU shows, in one short run: PASS or FAIL with the numbers, for the device machine.

    python scripts/gpu_check.py                  # on a machine with CUDA (about 2 minutes)
    python scripts/gpu_check.py --device cpu     # the same logic on the CPU: a dry run (no sync or AMP check)

The device machine has PyTorch with CUDA and no network: download the other wheels here, for its
Python, into ``wheels/`` (ignored by git), carry that folder, and install them there without their
dependencies (``run(command=..., carry=["wheels"])``):

    pip download --no-deps --only-binary=:all: --python-version 3.12 -d wheels \\
        pytorch-ignite==0.5.5 tensorboardX==2.6.5 crc32c==2.9.post0 protobuf==7.36.2
    # on the device:
    pip install --no-deps --no-index wheels/*.whl && python scripts/gpu_check.py

Checks (a model of two Linear layers with dropout on the GPU, its data on the GPU too, so that no
copy from the host is in the step):

1. **No host sync in a monitored step.** ``torch.cuda.set_sync_debug_mode("warn")``: the synchronizing
   calls are counted on each step that is not a ``log_every`` step (where monitor reads the loss on
   purpose), for the bare engine and for monitor at its defaults. Monitor's count must be the bare
   engine's.
2. **AMP's GradScaler and the CUDA RNG through a kill.** ``build_trainer(amp_mode="amp",
   scaler=True)``, dropout drawing from the CUDA generator, a last checkpoint every 5 iterations:
   the run is killed (SIGKILL) mid-epoch 2 and resumed, and its history (timings aside) and final
   loss scale must equal an uninterrupted run's.
3. **The per-step CPU cost against the bare engine**: CPU time of the training thread a step
   (medians of 50-step windows), interleaved rounds, the bare engine against itself beside.
With one GPU there is no NCCL check (DDP and FSDP2 over NCCL need two).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import monitor  # noqa: E402
from benchmarks.common import interleaved  # noqa: E402
from monitor.store.layout import last_checkpoints  # noqa: E402
from tests.crash_helpers import TIME_COLUMNS  # noqa: E402

SAMPLES, FEATURES, BATCH, LOG_EVERY = 8192, 784, 64, 10


def setup(device: str, seed: int = 0, **trainer_kwargs: object) -> tuple[Engine, Engine, DataLoader, DataLoader, dict]:
    """The model, its data on ``device``, a trainer and an evaluator."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SAMPLES, FEATURES, generator=g)
    y = (x[:, :10].sum(1) > 0).long()
    x, y = x.to(device), y.to(device)
    train = DataLoader(TensorDataset(x[:-1024], y[:-1024]), batch_size=BATCH, shuffle=True,
                       generator=torch.Generator().manual_seed(seed))
    val = DataLoader(TensorDataset(x[-1024:], y[-1024:]), batch_size=256)
    model = nn.Sequential(nn.Linear(FEATURES, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 2)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = monitor.build_trainer(model, optimizer, loss_fn, **trainer_kwargs)
    evaluator = monitor.build_evaluator(model, {"loss": Loss(loss_fn)})
    return trainer, evaluator, train, val, {"model": model, "optimizer": optimizer}


def attach(trainer: Engine, evaluator: Engine, val: DataLoader, to_save: dict, run_dir: Path, **kwargs: object):
    return monitor.attach_monitoring(
        trainer, evaluator, val, run_dir=run_dir, objective=monitor.Objective("loss", mode="min"), to_save=to_save,
        early_stopping=None, console=monitor.Console(log_every=LOG_EVERY, tqdm_kwargs={"disable": True}), **kwargs)


# -- 1. host syncs ----------------------------------------------------------------------------------------
def syncs_per_step(device: str, monitored: bool) -> dict[int, int]:
    """The synchronizing CUDA calls each iteration made (warned by the sync debug mode), by iteration."""
    trainer, evaluator, train, val, to_save = setup(device)
    counts: dict[int, int] = {}
    current = [0]
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: current.__setitem__(0, e.state.iteration))
    if monitored:
        run = attach(trainer, evaluator, val, to_save, Path(tempfile.mkdtemp()) / "run")
    else:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val))
    def seen(message: Warning | str, *_: object, **__: object) -> None:  # counted at the iteration it came in
        if "synchroniz" in str(message):
            counts[current[0]] = counts.get(current[0], 0) + 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = seen
        torch.cuda.set_sync_debug_mode("warn")
        try:
            if monitored:
                with run:
                    trainer.run(train, max_epochs=2)
            else:
                trainer.run(train, max_epochs=2)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return counts


def check_syncs(device: str) -> bool:
    if device != "cuda":
        print("1. host syncs: skipped (no CUDA)")
        return True
    steps = len(range(0, SAMPLES - 1024, BATCH))
    # a step between two log_every steps, not an epoch's first or last (the epoch's own work is there)
    quiet = [i for i in range(2, 2 * steps) if i % LOG_EVERY not in (0, 1) and i % steps not in (0, 1)]
    bare, monitored = syncs_per_step(device, False), syncs_per_step(device, True)
    extra = {i: monitored.get(i, 0) - bare.get(i, 0) for i in quiet if monitored.get(i, 0) != bare.get(i, 0)}
    elsewhere = [sum(n for i, n in counts.items() if i not in quiet) for counts in (monitored, bare)]
    print(f"1. host syncs on {len(quiet)} quiet steps: bare engine {sum(bare.get(i, 0) for i in quiet)}, "
          f"monitor {sum(monitored.get(i, 0) for i in quiet)}; on the other steps monitor {elsewhere[0]}, bare "
          f"{elsewhere[1]} -> {'PASS' if not extra else f'FAIL: monitor adds syncs at {sorted(extra)[:10]}'}")
    return not extra


# -- 2. AMP and the CUDA RNG through a kill ----------------------------------------------------------------
def child(run_dir: str, device: str, kill_at: int, resume: bool) -> None:
    """One segment of the AMP run (in a process of its own: it may be killed)."""
    logging.basicConfig(level=logging.WARNING)
    amp = {"amp_mode": "amp", "scaler": True} if device == "cuda" else {}
    trainer, evaluator, train, val, to_save = setup(device, **amp)
    run = attach(trainer, evaluator, val, to_save, Path(run_dir), resume=resume,
                 checkpoints=monitor.Checkpoints(every=Events.ITERATION_COMPLETED(every=5), restore_best=False))
    if kill_at:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=kill_at),
                                  lambda _: os.kill(os.getpid(), signal.SIGKILL))
    with run:
        trainer.run(train, max_epochs=3)


def segment(run_dir: Path, device: str, kill_at: int = 0, resume: bool = False) -> int:
    args = [sys.executable, __file__, "--device", device, "--child", str(run_dir), str(kill_at), str(int(resume))]
    return subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False).returncode


def final_state(run_dir: Path) -> tuple[object, float | None]:
    """The history (timings aside) and the GradScaler's scale in the last checkpoint."""
    import pandas as pd

    history = pd.read_csv(run_dir / "history.csv").drop(columns=TIME_COLUMNS, errors="ignore")
    saved = torch.load(last_checkpoints(run_dir / "checkpoints")[0], map_location="cpu", weights_only=False)
    return history, (saved.get("scaler") or {}).get("scale")


def check_kill(device: str) -> bool:
    import pandas as pd

    work = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    steps = len(range(0, SAMPLES - 1024, BATCH))
    kill_at = steps + steps // 2 + 2  # mid-epoch 2, 2 steps after a checkpoint's iteration at most 5 back
    codes = [segment(work / "whole", device), segment(work / "killed", device, kill_at=kill_at),
             segment(work / "killed", device, resume=True)]
    if codes != [0, -signal.SIGKILL, 0]:
        print(f"2. AMP through a kill: FAIL: exit codes {codes} (expected [0, -9, 0])")
        return False
    (whole, scale_whole), (resumed, scale_resumed) = final_state(work / "whole"), final_state(work / "killed")
    try:
        pd.testing.assert_frame_equal(resumed, whole, check_exact=False, rtol=1e-5)
        same, why = True, ""
    except AssertionError as e:
        same, why = False, str(e).splitlines()[0]
    same = same and scale_whole == scale_resumed
    print(f"2. {'AMP GradScaler and ' if device == 'cuda' else ''}CUDA RNG through a kill at iteration {kill_at}: "
          f"history {'equal' if not why else 'differs: ' + why}; final scale {scale_resumed} (uninterrupted "
          f"{scale_whole}) -> {'PASS' if same else 'FAIL'}")
    return same


# -- 3. per-step CPU cost ------------------------------------------------------------------------------------
def step_cpu(device: str, monitored: bool) -> float:
    trainer, evaluator, train, val, to_save = setup(device)
    marks: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: marks.append(time.thread_time()))
    if monitored:
        with attach(trainer, evaluator, val, to_save, Path(tempfile.mkdtemp()) / "run"):
            trainer.run(train, max_epochs=3)
    else:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val))
        trainer.run(train, max_epochs=3)
    steps = len(train)
    windows = [(marks[i + 50] - marks[i]) / 50 for i in range(steps, len(marks) - 50, 50)
               if (i % steps) + 50 < steps]  # within epochs 2 and 3
    return statistics.median(windows)


def check_cost(device: str, rounds: int) -> None:
    found = interleaved({"bare": lambda: step_cpu(device, False), "bare again": lambda: step_cpu(device, False),
                         "monitor": lambda: step_cpu(device, True)}, rounds)
    base = statistics.median(found["bare"])
    over = [(m - b) * 1e6 for m, b in zip(found["monitor"], found["bare"], strict=True)]
    noise = [(a - b) * 1e6 for a, b in zip(found["bare again"], found["bare"], strict=True)]
    print(f"3. CPU time of the training thread a step: bare engine {base * 1e6:.1f} us; monitor over it "
          f"{statistics.median(over):.1f} us ({min(over):.1f}..{max(over):.1f}); bare again over bare "
          f"{statistics.median(noise):.1f} us ({min(noise):.1f}..{max(noise):.1f}); {rounds} rounds")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the cost check")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.device, int(args.child[1]), args.child[2] == "1")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("No CUDA here: run with --device cpu for a dry run.")
        return 2
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}")
    ok = check_syncs(args.device)
    ok = check_kill(args.device) and ok
    check_cost(args.device, args.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
