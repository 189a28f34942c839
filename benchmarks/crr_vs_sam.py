"""Time of one training step of the paper's MNIST CNN: Adam, SAM and CRR.

One batch of 128 random 1×28×28 inputs with random labels; each method has its
own copy of the network (same initial weights, training mode, so dropout is on)
and its own optimiser. Timed steps:

- ``adam``: forward, backward, Adam step (lr 1e-3);
- ``sam``: as the training loop runs it: forward and backward at ``w``, then
  ``SAM.step(closure)`` (ρ = 0.05, Adam base), which adds a forward and backward
  at ``w + ε``;
- ``crr``: :func:`crbook.crr_objective` (orders 1–4, scale 200, whole batch, one
  shared direction, Taylor mode, dropout active): the loss and the penalty from
  one Taylor pass, then backward and an Adam step;
- ``crr_chunks2``, ``crr_chunks4``: the same with ``chunks=2`` (two Taylor
  passes of 64 examples, whose folded activations have the size of a plain
  pass's) and ``chunks=4``;
- ``crr_two_pass``: a plain forward for the loss plus :func:`crbook.crr_penalty`,
  as the paper's code (and a ``regularizer=`` hook of ``crbook.train.fit``) does;
- ``crr_nested``: the same penalty by nested autograd (``method="autograd"``).

The methods are timed in alternation: each round runs every step once, starting
from a different method each round, and each step's time is divided by the SAM
step of the same round. The table gives the median of those ratios, so a slow
spell of a shared machine weighs on every method alike, and the minor page faults
of each step.

The memory allocator matters on CPU. glibc maps a block above its threshold (at
most 32 MiB) afresh with ``mmap`` and faults its pages in on every step, unless a
large enough free block already sits in its heap, and it trims its heap when
enough memory at the top is free. The Taylor pass's largest tensors (the jet's two
coefficients folded into the batch axis) lie above that line, a plain pass's below
it; and in one process every step inherits the heap the others grew (SAM profits
from the CRR steps', and a nested step spares all later ones). ``--processes``
runs each method in a process of its own, as a training loop that only does that
method would; ``--allocator heap`` removes the allocator's part for all methods
(no fresh mappings, no trimming); ``--methods`` runs a subset.

Run from the repository root:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crr_vs_sam.py [--rounds 11]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crr_vs_sam.py --allocator heap
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crr_vs_sam.py --methods sam crr
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crr_vs_sam.py --processes
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/crr_vs_sam.py --profile
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import multiprocessing
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import crbook
from crbook.models import MnistCNN

ORDERS = (1, 2, 3, 4)
SCALE = 200.0
LR = 1e-3


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_steps(batch: int, seed: int) -> dict[str, Callable[[], Callable[[], None]]]:
    """For each method, a function that builds its step (a fresh model and
    optimiser each, from the same initial weights)."""
    torch.manual_seed(seed)
    base = MnistCNN().train()
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(10, (batch,))
    directions = torch.Generator().manual_seed(seed)

    def adam_step() -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=LR)

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

        return step

    def sam_step() -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = crbook.SAM(model.parameters(), torch.optim.Adam, 0.05, lr=LR)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        def step():
            closure()
            opt.step(closure)

        return step

    def crr_step(chunks: int) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=LR)

        def step():
            opt.zero_grad()
            loss, penalty = crbook.crr_objective(
                model,
                x,
                y,
                ORDERS,
                SCALE,
                directions,
                check_finite=False,
                chunks=chunks,
            )
            (loss + penalty).backward()
            opt.step()

        return step

    def crr_penalty_step(method: str) -> Callable[[], None]:
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=LR)

        def step():
            opt.zero_grad()
            penalty = crbook.crr_penalty(
                model,
                x,
                y,
                ORDERS,
                SCALE,
                generator=directions,
                method=method,
                check_finite=False,
            )
            (F.cross_entropy(model(x), y) + penalty).backward()
            opt.step()

        return step

    return {
        "adam": adam_step,
        "sam": sam_step,
        "crr": lambda: crr_step(1),
        "crr_chunks2": lambda: crr_step(2),
        "crr_chunks4": lambda: crr_step(4),
        "crr_two_pass": lambda: crr_penalty_step("taylor"),
        "crr_nested": lambda: crr_penalty_step("autograd"),
    }


def keep_freed_memory() -> None:
    """Make glibc serve every allocation from its heap and never give memory back.

    By default glibc maps allocations above its threshold (at most 32 MiB) afresh
    with ``mmap`` and unmaps them when freed, so their pages are faulted in and
    zeroed again on every step. The Taylor pass folds the jet's two coefficients
    into the batch axis, which puts the largest activations of this network
    (``(256, 64, 24, 24)`` floats, 37.7 MB) above that line, while a plain pass's
    (18.9 MB) stay below it.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_max = -1, -4  # from glibc's malloc.h
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**30)


def timed(step: Callable[[], None]) -> tuple[float, int]:
    """Seconds and minor page faults of one step."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def interleaved(
    steps: dict[str, Callable[[], None]], rounds: int
) -> dict[str, list[tuple[float, int]]]:
    names = list(steps)
    for name in names:  # warm-up: allocations, lazy imports, first Adam step
        steps[name]()
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            runs[name].append(timed(steps[name]))
    return runs


def _worker(name: str, batch: int, seed: int, allocator: str, conn) -> None:
    """One method's steps, in a process of its own, each when the parent asks."""
    if allocator == "heap":
        keep_freed_memory()
    step = make_steps(batch, seed)[name]()
    step()  # warm-up
    conn.send(None)
    while conn.recv():
        conn.send(timed(step))


def in_processes(
    names: list[str], batch: int, seed: int, allocator: str, rounds: int
) -> dict[str, list[tuple[float, int]]]:
    """``interleaved``, but each method in its own process: its allocator then
    holds only what that method's own steps left, as in a training loop that runs
    only that method."""
    context = multiprocessing.get_context("spawn")
    workers = {}
    for name in names:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker, args=(name, batch, seed, allocator, child)
        )
        process.start()
        workers[name] = (parent, process)
    try:
        for parent, _ in workers.values():
            parent.recv()  # built and warmed up
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                parent = workers[name][0]
                parent.send(True)
                runs[name].append(parent.recv())
        return runs
    finally:
        for parent, process in workers.values():
            if process.is_alive():
                parent.send(False)
            process.join(timeout=60)


def report(
    runs: dict[str, list[tuple[float, int]]], batch: int, allocator: str
) -> list[str]:
    sam = [seconds for seconds, _ in runs["sam"]]
    lines = [
        f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; torch "
        f"{torch.__version__}; torch threads {torch.get_num_threads()}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"MnistCNN, batch {batch}, {len(sam)} interleaved rounds, "
        f"allocator: {allocator}",
        "",
        "| step | median time (ms) | ratio to SAM step (median, quartiles) "
        "| page faults per step (median) |",
        "|---|---:|---:|---:|",
    ]
    for name, run in runs.items():
        times = [seconds for seconds, _ in run]
        ratios = [t / s for t, s in zip(times, sam, strict=True)]
        q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        faults = statistics.median(count for _, count in run)
        lines.append(
            f"| {name} | {1e3 * statistics.median(times):.0f} | "
            f"{median:.2f} ({q1:.2f}–{q3:.2f}) | {faults:.0f} |"
        )
    return lines


def profile_crr(steps: dict[str, Callable[[], None]], rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    for name in ("crr", "sam"):
        steps[name]()
    tables = []
    for name in ("crr", "sam"):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            steps[name]()
        averages = prof.key_averages(group_by_input_shape=True)
        table = averages.table(sort_by="self_cpu_time_total", row_limit=rows)
        tables.append(f"== {name} step ==\n{table}")
    return "\n".join(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--methods", nargs="+", default=None, help="a subset of the steps (with sam)"
    )
    parser.add_argument(
        "--allocator",
        choices=("default", "heap"),
        default="default",
        help="heap: glibc keeps freed memory and never maps large blocks afresh",
    )
    parser.add_argument(
        "--processes",
        action="store_true",
        help="run each method in its own process (its allocator sees only its steps)",
    )
    parser.add_argument("--profile", action="store_true", help="profile CRR and SAM")
    parser.add_argument("--rows", type=int, default=20)
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print(
            "warning: run with OMP_NUM_THREADS=1 for figures comparable to the README"
        )

    factories = make_steps(args.batch, args.seed)
    names = list(factories)
    if args.methods:
        unknown = set(args.methods) - set(factories)
        if unknown or "sam" not in args.methods:
            parser.error(f"--methods must include sam and name only {names}")
        names = [name for name in names if name in args.methods]
    if args.processes:
        runs = in_processes(names, args.batch, args.seed, args.allocator, args.rounds)
    else:
        if args.allocator == "heap":
            keep_freed_memory()
        steps = {name: factories[name]() for name in names}
        if args.profile:
            print(profile_crr(steps, args.rows))
            return
        runs = interleaved(steps, args.rounds)
    setting = args.allocator + (", one process per method" if args.processes else "")
    print("\n".join(report(runs, args.batch, setting)))


if __name__ == "__main__":
    main()
