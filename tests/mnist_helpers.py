"""A tiny stand-in for the `mnist` asset: the same gzip'd Python pickle layout, a few hundred
random images, so tests never need the 17 MB download."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np

from sweeper.tasks import assets, mnist


def write_fake_mnist(cache: Path, sizes: tuple[int, int, int] = (300, 100, 100)) -> Path:
    """A fetched-looking asset folder under `cache` whose pickle holds (train, valid, test)
    tuples of (float32 (n, 784) images, int64 labels); labels are learnable from the images
    (a bright 28-pixel stripe per class), so a short training run can pass a bar."""
    rng = np.random.default_rng(0)
    parts = []
    for n in sizes:
        y = np.arange(n, dtype=np.int64) % 10
        x = rng.uniform(0, 0.3, size=(n, 784)).astype(np.float32)
        for label in range(10):
            x[y == label, label * 28 * 2 : label * 28 * 2 + 28] += 0.7
        parts.append((x, y))
    folder = cache / mnist.ASSET
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / mnist.FILE, "wb") as f:
        pickle.dump(tuple(parts), f, protocol=2)
    (folder / assets.MANIFEST).write_text(json.dumps({"fake": True}))
    return folder
