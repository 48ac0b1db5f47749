"""Is Fastfood's Π as good as a random permutation for aligned read-outs? (issue 11, point 4)

    python bench/permutation.py [--seeds 8] [--out bench/results/permutation.json]

For toy-sums layouts (`groups` consecutive groups of `size` values, D = groups · size, d mostly
= groups) it builds P explicitly from `fastfood_reference` twice: as the generator makes it, and
with every block's Π replaced by a truly random (NumPy) permutation, all else (B, G, scale)
equal. For each it prints, over seeds, rank(A·P) (A sums each group: toy-sums is solvable at d
iff that rank is `groups`) and the mean |off-diagonal| of the column Gram matrix PᵀP. A Π that
behaves like a random one gives the same statistics. Runs on any generator version, so the same
script measures before and after a change of Π.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path
from statistics import mean

import numpy as np
import torch

from sweeper.projection import fastfood
from sweeper.projection.fastfood import generator

# (groups, group size, d): powers of two first, then other sizes; d = groups unless a third value
LAYOUTS = [(33, 2, 33), (33, 2, 40), (33, 2, 48), (16, 2, 16), (32, 2, 32), (64, 2, 64)]
LAYOUTS += [(32, 4, 32), (33, 4, 33), (64, 4, 64), (48, 8, 48), (24, 16, 24), (40, 32, 40)]
LAYOUTS += [(64, 64, 64), (17, 128, 17), (33, 3, 33), (32, 5, 32), (20, 12, 20), (33, 100, 33)]


@contextmanager
def random_pi(rng_seed: int):
    """Replace every block's Π by a uniform random permutation (seeded by seed, chunk, block)."""
    original = generator.block_states

    def patched(seed, chunk, blocks, n):
        b, g, _ = original(seed, chunk, blocks, n)
        perms = [
            np.random.default_rng([rng_seed, seed, chunk, int(blk)]).permutation(n)
            for blk in np.asarray(blocks)
        ]
        return b, g, np.stack(perms).astype(np.int64)

    generator.block_states = patched
    try:
        yield
    finally:
        generator.block_states = original


def fastfood_matrix(D: int, d: int, seed: int) -> np.ndarray:
    """P (D × d) column by column from the reference."""
    eye = torch.eye(d, dtype=torch.float64)
    cols = [fastfood.fastfood_reference(eye[j], D, seed) for j in range(d)]
    return torch.stack(cols, dim=1).numpy()


def group_sums(groups: int, size: int) -> np.ndarray:
    """A: groups × (groups · size), row i sums values [i · size, (i + 1) · size)."""
    return np.kron(np.eye(groups), np.ones((1, size)))


def stats(P: np.ndarray, groups: int, size: int) -> tuple[int, float]:
    """(rank(A·P), mean |off-diagonal| of PᵀP)."""
    gram = P.T @ P
    off = np.abs(gram[~np.eye(len(gram), dtype=bool)])
    return int(np.linalg.matrix_rank(group_sums(groups, size) @ P)), float(off.mean())


def compare(groups: int, size: int, d: int, seeds: range) -> dict:
    """Statistics of the generator's Π and of a random Π, seed by seed."""
    D = groups * size
    ours = [stats(fastfood_matrix(D, d, s), groups, size) for s in seeds]
    with random_pi(12345):
        rand = [stats(fastfood_matrix(D, d, s), groups, size) for s in seeds]
    return {
        "groups": groups,
        "size": size,
        "d": d,
        "rank": [r for r, _ in ours],
        "rank_random": [r for r, _ in rand],
        "gram": mean(g for _, g in ours),
        "gram_random": mean(g for _, g in rand),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", default="bench/results/permutation.json")
    args = parser.parse_args()
    rows = []
    print(f"generator {generator.VERSION}, seeds 0..{args.seeds - 1}")
    head = f"{'rank Π':>20} {'rank random Π':>20} {'gram':>7} {'random':>7}"
    print(f"{'groups':>6} {'size':>5} {'d':>4} {head}")
    for groups, size, d in LAYOUTS:
        row = compare(groups, size, d, range(args.seeds))
        rows.append(row)
        r, q = row["rank"], row["rank_random"]
        ours = f"{mean(r):.1f} [{min(r)}, {max(r)}]"
        rand = f"{mean(q):.1f} [{min(q)}, {max(q)}]"
        print(
            f"{groups:>6} {size:>5} {d:>4} {ours:>20} {rand:>20} "
            f"{row['gram']:>7.4f} {row['gram_random']:>7.4f}",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"generator": generator.VERSION, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
