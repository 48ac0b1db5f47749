"""View data → one self-contained HTML page: the `dashboards/` template with its CSS, JS and
the data inlined, so the file opens offline (no CDN, no fetch) and the live dashboard serves
the very same page."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

# The templates live in the repository's top-level `dashboards/` folder; `templates` links to it
# from inside the package, so a wheel (a plain `pip install .`) carries them too.
ASSETS = Path(__file__).resolve().parent / "templates"
_SLOT = re.compile(r"\{\{ (\w+) \}\}")
# One inline <script>, the plotting library first: the views in dashboard.js read it as
# window.sweeperPlot (no module loader, so the page stays a single offline file).
SCRIPTS = ("plot.js", "dashboard.js")


def asset(name: str) -> str:
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(
            f"dashboard template {path} is missing: reinstall sweeper (`pip install .`), whose "
            "package carries dashboards/ as sweeper/dashboard/templates"
        )
    return path.read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no `</script>`, no NaN."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict[str, Any], *, title: str, live: dict[str, Any] | None = None) -> str:
    """The page; `live` ({"endpoint": "/api/data", "refresh_ms": 5000}) makes it poll for data."""
    slots = {
        "title": html.escape(title),
        "css": asset("dashboard.css"),
        "js": "\n".join(asset(name) for name in SCRIPTS),
        "data": script_json(data),
        "config": script_json({"live": live}),
    }
    # one pass: text that was substituted in is never scanned for slots again
    return _SLOT.sub(lambda m: slots[m.group(1)], asset("dashboard.html"))
