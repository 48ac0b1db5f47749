"""Builders the test modules share (a test module never imports another): job specs, the
corpus of malformed specs and walking a spec's tree."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).parent / "specs" / "bad"
QUICKSTART_YAML = ROOT / "jobs" / "quickstart.yaml"
QUICKSTART = yaml.safe_load(QUICKSTART_YAML.read_text())

CORPUS = sorted(BAD.glob("*.yaml"))
GROUPS = 6  # toy_job's toy-sums groups: its d90 is exactly this


def toy_job(run_dir: Path, name: str = "toy", methods=("did", "said"), **extra) -> dict:
    """A small real job on toy-sums (intrinsic dimension GROUPS), its store in `run_dir`."""
    return {
        "name": name,
        "grid": [
            {"models": ["vector"], "tasks": [{"name": "toy-sums", "options": {"groups": GROUPS}}]}
        ],
        "methods": {m: {"search": {"lo": 2, "hi": 64}} for m in methods},
        "seeds": {"baseline": 1, "probe": 1, "boundary": 2},
        "tolerance": 0.05,
        "budget": {"max_probes": 20},
        "tracking": {"run_dir": str(run_dir)},
        **extra,
    }


def expected_field(path: Path) -> str:
    """The text after `# expect: ` on the first line (read as bytes: one file is not UTF-8)."""
    first = path.read_bytes().split(b"\n", 1)[0].decode()
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <field>'"
    return first.removeprefix("# expect: ")


def dotted(path: tuple) -> str:
    """('grid', 0, 'tasks', 1, 'name') → 'grid[0].tasks[1].name', as SpecError spells fields."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def walk(node, path=()):
    """Every (path, value) below `node`, `node` itself included."""
    yield path, node
    if isinstance(node, dict | list):
        for key, value in node.items() if isinstance(node, dict) else enumerate(node):
            yield from walk(value, (*path, key))


def at(data, path):
    for key in path:
        data = data[key]
    return data
