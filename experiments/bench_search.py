"""Re-solving one budget from a cached score table: 1,000 units x 16 schemes on this machine.

Writes experiments/results/bench_search.md. The instance is synthetic but shaped like a real
table: each unit has a size and a sensitivity, each scheme a bit width; scores shrink about
4x per extra bit with noise, so many schemes are neither dominated nor obviously best.

Run: .venv/bin/python experiments/bench_search.py [--units 1000 --schemes 16 --repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from study import publish

from mixprec.markdown import frame_markdown
from mixprec.search.greedy import solve_greedy
from mixprec.search.ilp import solve_ilp
from mixprec.search.selection import undominated

RESULTS = Path(__file__).resolve().parent / "results"


def instance(units: int, schemes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    params = gen.integers(10_000, 5_000_000, units).astype(float)
    bits = np.sort(gen.uniform(2, 16, schemes))
    sensitivity = gen.lognormal(0, 2, units)
    noise = gen.lognormal(0, 0.5, (units, schemes))
    scores = sensitivity[:, None] * 4.0 ** (-bits[None, :]) * noise
    costs = params[:, None] * bits[None, :] / 8
    return scores, costs


def block_terms(scores: np.ndarray, costs: np.ndarray, block: int = 4, low: int = 2,
                seed: int = 1) -> dict[tuple[int, int, int, int], float]:  # fmt: skip
    """Pairwise terms as measured ones look: every two units of a block of `block`, under each
    of the `low` fewest-bit schemes, about 10% of the smaller score, of either sign."""
    gen = np.random.default_rng(seed)
    fewest = [int(k) for k in np.argsort(costs[0])[:low]]
    terms = {}
    for start in range(0, scores.shape[0], block):
        members = range(start, min(start + block, scores.shape[0]))
        for i in members:
            for j in (j for j in members if j > i):
                for k in fewest:
                    terms[i, k, j, k] = float(gen.normal(0, 0.1) * min(scores[i, k], scores[j, k]))
    return terms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000)
    parser.add_argument("--schemes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_search.md")
    args = parser.parse_args()
    scores, costs = instance(args.units, args.schemes)
    kept = int(undominated(scores, [costs]).sum())
    terms = block_terms(scores, costs)
    rows = []
    solvers = {
        "ilp (cbc)": lambda limit: solve_ilp(scores, [(costs, limit)], "cbc"),
        "ilp (highs)": lambda limit: solve_ilp(scores, [(costs, limit)], "highs"),
        "greedy": lambda limit: solve_greedy(scores, [(costs, limit)]),
        f"ilp (cbc) + {len(terms):,} pairwise terms": lambda limit: solve_ilp(
            scores, [(costs, limit)], "cbc", interactions=terms
        ),
    }
    least, most = costs.min(axis=1).sum(), costs.max(axis=1).sum()
    for fraction in (0.1, 0.25, 0.4, 0.6):
        limit = least + fraction * (most - least)
        objective = {}
        for name, solve in solvers.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = solve(limit)
                times.append(time.perf_counter() - start)
            objective[name] = result.objective
            rows.append(
                {"budget (fraction of range)": fraction, "method": name, "status": result.status,
                 "median s": float(np.median(times)), "max s": float(np.max(times)),
                 "objective": result.objective}
            )  # fmt: skip
        for row in rows[-len(solvers) :]:
            row["objective / ilp (cbc)"] = row["objective"] / objective["ilp (cbc)"]
    frame = pd.DataFrame(rows)
    text = (
        "# Re-solving one budget from a cached score table\n\n"
        f"Made by `python experiments/bench_search.py` on {platform.machine()} "
        f"({platform.processor() or 'cpu'}), {args.units} units x {args.schemes} schemes, "
        f"{args.repeats} repeats per budget; {kept} of {args.units * args.schemes} cells survive "
        "dominance pruning. Times include building the PuLP model and the solver run. The last "
        "method prices pairwise terms (every two units of a block of 4 under the 2 fewest-bit "
        "schemes, about 10% of the smaller score): no dominance pruning for the units they "
        "touch, one auxiliary variable each; its objective includes the terms.\n\n"
        + frame_markdown(frame, digits=4)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
