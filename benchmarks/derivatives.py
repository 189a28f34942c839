"""Taylor mode against a forward pass and against nested autograd, in one run.

For each model, the per-example cross-entropy of a batch of 256 is differentiated
along one random direction per example, at orders 2, 4, 6, 8 and 10. Reported:

- the forward pass (median over repeats, milliseconds);
- Taylor mode as a ratio to the forward pass, eagerly and with ``compile=True``
  (the recurrences as ``torch.compile`` kernels; the one-off compile time of each
  order is reported apart and kept out of the ratio): forward and Taylor are timed
  in alternation and the ratio is the median of the paired ratios, which keeps a
  slow spell of a shared machine from favouring either side;
- nested reverse-mode autograd, timed once per order (its time and memory grow
  exponentially: on the 784-wide MLP the whole batch at order 8 exhausts 24 GiB,
  so the batch is differentiated in chunks of ``--chunk`` examples and the times
  added), until one order takes longer than ``--budget`` seconds; for the orders
  left out the table gives a lower bound on the speed-up, because nesting one order
  more never costs less than the order before.

Run from the repository root:  OMP_NUM_THREADS=1 python benchmarks/derivatives.py
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

import crbook

ORDERS = (2, 4, 6, 8, 10)


def tanh_mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def paired_ratio(base, other, repeats: int) -> tuple[float, float]:
    """Median of ``other / base`` over alternating runs, and the median base time."""
    base()
    other()
    ratios, bases = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        base()
        middle = time.perf_counter()
        other()
        end = time.perf_counter()
        bases.append(middle - start)
        ratios.append((end - middle) / (middle - start))
    return statistics.median(ratios), statistics.median(bases)


def run(
    sizes: tuple[int, ...], batch: int, repeats: int, budget: float, chunk: int
) -> list[str]:
    torch.manual_seed(0)
    model = tanh_mlp(sizes)
    x = torch.randn(batch, sizes[0])
    u = crbook.unit_directions(x.shape)
    y = torch.randint(sizes[-1], (batch,))

    def loss(z):
        return F.cross_entropy(model(z), y, reduction="none")

    def forward():
        with torch.no_grad():
            loss(x)

    rows = []
    forward_ms = []
    nested_seconds = None
    for order in ORDERS:

        def taylor(order=order, compile=False):
            with torch.no_grad():
                crbook.directional_derivatives(
                    loss, x, u, order, check_finite=False, compile=compile
                )

        def compiled(order=order):
            taylor(order, compile=True)

        start = time.perf_counter()
        compiled()  # compiles this order's kernels (or finds them cached)
        compile_seconds = time.perf_counter() - start
        ratio, base = paired_ratio(forward, taylor, repeats)
        compiled_ratio, compiled_base = paired_ratio(forward, compiled, repeats)
        forward_ms += [base * 1e3, compiled_base * 1e3]
        taylor_seconds = ratio * base  # the speed-up is eager Taylor mode's
        if nested_seconds is None or nested_seconds <= budget:
            start = time.perf_counter()
            for first in range(0, batch, chunk):
                part = slice(first, first + chunk)

                def part_loss(z, part=part):
                    return F.cross_entropy(model(z), y[part], reduction="none")

                crbook.directional_derivatives(
                    part_loss, x[part], u[part], order, method="autograd"
                )
            nested_seconds = time.perf_counter() - start
            speedup = f"{nested_seconds / taylor_seconds:,.0f}×"
            nested = f"{nested_seconds:.3g} s"
        else:
            speedup = f"≥ {nested_seconds / taylor_seconds:,.0f}×"
            nested = f"> {nested_seconds:.3g} s (not run)"
        rows.append(
            f"| {order} | {ratio:.2f}× | {compiled_ratio:.2f}× "
            f"({compile_seconds:.0f} s) | {nested} | {speedup} |"
        )
    name = "-".join(map(str, sizes))
    head = [
        f"\n{name} tanh MLP, batch {batch}, float32; forward pass "
        f"{statistics.median(forward_ms):.2f} ms (median)\n",
        "| order | Taylor / forward | compiled Taylor / forward (first call) "
        "| nested autograd | Taylor speed-up |",
        "|---|---|---|---|---|",
    ]
    return head + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="stop nesting autograd once one order takes longer (seconds)",
    )
    parser.add_argument(
        "--chunk", type=int, default=32, help="examples per nested-autograd call"
    )
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), {args.repeats} repeats, nested "
        f"autograd in chunks of {args.chunk}",
        flush=True,
    )
    for sizes in ((784, 256, 256, 10), (2, 64, 64, 2)):
        rows = run(sizes, 256, args.repeats, args.budget, args.chunk)
        print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
