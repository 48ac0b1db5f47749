#!/usr/bin/env bash
# A real multi-node Ray on this box, on 127.0.0.1: a head (Jobs API, no CPUs) + N worker nodes,
# each its own raylet with one CPU and a resource naming it (sweeper_node_w1, …).
#
#   cluster/local-ray.sh up 2      # head + 2 workers; prints the --address to submit to
#   cluster/local-ray.sh status    # alive nodes and their resources
#   cluster/local-ray.sh down      # stop every node it started (never anyone else's Ray)
#
# Ports (defaults keep clear of Ray's own 6379/8265/10001): SWEEPER_RAY_PORT (GCS, 46379),
# SWEEPER_RAY_DASHBOARD_PORT (48265), SWEEPER_RAY_NODE_PORTS (46400: node i uses the ten
# ports from 46400 + 10·i). State and logs: SWEEPER_RAY_DIR (~/.cache/sweeper/local-ray).
# PYTHON picks the interpreter (default: the project's .venv, else python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/local_cluster.py" "$@"
