"""The docs site and the README: the site builds with `mkdocs build --strict` (a broken link,
anchor or page fails), the generated references match the code, and nothing in the repository
points to a file outside it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper import docs_gen

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_generated_references_are_current():
    stale = docs_gen.stale(ROOT)
    assert not stale, (
        f"{', '.join(map(str, stale))} stale: the job-spec schema or the CLI changed; "
        f"regenerate with `{docs_gen.COMMAND}` and commit the pages"
    )


def test_every_spec_field_and_cli_argument_is_described():
    # the generator refuses a field or argument without a description, naming it
    docs_gen.job_spec_page()
    docs_gen.cli_page()


def test_a_field_without_a_description_stops_the_generator_naming_it(monkeypatch):
    docs = {k: v for k, v in docs_gen.FIELD_DOCS.items() if k != "budget.max_probes"}
    monkeypatch.setattr(docs_gen, "FIELD_DOCS", docs)
    with pytest.raises(docs_gen.MissingDocs, match=r"budget\.max_probes.*FIELD_DOCS"):
        docs_gen.job_spec_page()


def test_the_cli_reference_does_not_depend_on_the_environment(monkeypatch):
    before = docs_gen.cli_page()
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://elsewhere:8265")
    monkeypatch.setenv("COLUMNS", "40")
    assert docs_gen.cli_page() == before


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: `pip install -e '.[docs]'`")
    pytest.importorskip("material", reason="mkdocs-material is not installed: `.[docs]`")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # the theme's notice, not our page's
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "job-spec" / "index.html").is_file()


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert pages and all(page in nav for page in pages), sorted(p for p in pages if p not in nav)


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    # the two fresh-machine commands, exactly as CI runs the second one
    assert (
        ".venv/bin/pip install torch==2.13.0 -e . && .venv/bin/sweeper run jobs/quickstart.yaml"
        in text
    )
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in text
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to a missing {target}"


def _repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if listed.returncode == 0:
        return [ROOT / line for line in listed.stdout.splitlines() if line]
    skip = {".git", ".venv", "runs", "site", "build"}
    return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_nothing_points_to_a_design_note_outside_the_repository():
    # the design lives in docs/design/; only the changelog may name the old note
    needle = "DESIGN" + ".md"
    found = []
    for path in _repository_files():
        if path.name == "changelog.md" or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        found += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                  if needle in line]  # fmt: skip
    assert not found, f"{needle} is not in this repository; cite a docs/ page instead: {found}"
