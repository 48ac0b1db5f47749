#!/usr/bin/env bash
# The MLflow tracking server for cluster mode (docs/design/cluster.md): PostgreSQL backend store, artifacts
# served by the server itself (clients upload/download through HTTP, so workers need no shared
# filesystem), bound to loopback unless MLFLOW_HOST says otherwise.
#
#   cluster/mlflow-server.sh start    # idempotent: creates what is missing, starts what is down
#   cluster/mlflow-server.sh stop     # MLflow server, then the PostgreSQL it started
#   cluster/mlflow-server.sh status   # exit 0 only when both answer
#
# For a one-box set-up `start` also creates a PostgreSQL cluster in $SWEEPER_MLFLOW_DATA/pg (trust
# auth, listening on 127.0.0.1 only: only the MLflow server talks to it) and the database. Set
# MLFLOW_BACKEND_URI to use an existing database instead; then no PostgreSQL is managed here.
#
# Environment (defaults in brackets):
#   SWEEPER_MLFLOW_DATA   data folder: pg/, artifacts/, logs, pid file      [./mlflow-server]
#   MLFLOW_HOST           interface the MLflow server binds                [127.0.0.1]
#   MLFLOW_PORT           its port                                         [5000]
#   MLFLOW_WORKERS        its uvicorn workers                              [2]
#   MLFLOW_APP_NAME       basic-auth: users and passwords (see below)      []
#   MLFLOW_ARTIFACTS      --artifacts-destination (a folder, s3://…)       [$DATA/artifacts]
#   MLFLOW_BACKEND_URI    an existing database; skips the local PostgreSQL  []
#   PG_PORT               port of the local PostgreSQL (on 127.0.0.1)      [5432]
#   PG_BIN                folder holding initdb/pg_ctl     [found on PATH or /usr/lib/postgresql/*]
#   PG_USER               user PostgreSQL runs as when this runs as root   [postgres]
#   MLFLOW                the mlflow executable             [mlflow on PATH, else ./.venv/bin/mlflow]
#   START_TIMEOUT         seconds to wait for /health                      [180]
#
# Basic auth (MLFLOW_APP_NAME=basic-auth): the first start needs MLFLOW_AUTH_ADMIN_PASSWORD (the
# `admin` user is created with it); users live in $DATA/basic_auth.db unless MLFLOW_AUTH_CONFIG_PATH
# names your own ini; the CSRF key MLFLOW_FLASK_SERVER_SECRET_KEY is generated once into $DATA.
# Clients then set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD.
set -euo pipefail

DATA="${SWEEPER_MLFLOW_DATA:-./mlflow-server}"
mkdir -p "$DATA"
DATA="$(cd "$DATA" && pwd)"
HOST="${MLFLOW_HOST:-127.0.0.1}"
PORT="${MLFLOW_PORT:-5000}"
WORKERS="${MLFLOW_WORKERS:-2}"
ARTIFACTS="${MLFLOW_ARTIFACTS:-$DATA/artifacts}"
PG_PORT="${PG_PORT:-5432}"
PG_USER="${PG_USER:-postgres}"
PG_DATA="$DATA/pg"
PID_FILE="$DATA/mlflow.pid"
LOG="$DATA/mlflow.log"
START_TIMEOUT="${START_TIMEOUT:-180}"
DB_NAME=mlflow
DB_USER=sweeper

die() { echo "mlflow-server: $*" >&2; exit 1; }

mlflow_bin() {
  if [[ -n "${MLFLOW:-}" ]]; then echo "$MLFLOW"
  elif command -v mlflow >/dev/null 2>&1; then command -v mlflow
  elif [[ -x "$(dirname "$0")/../.venv/bin/mlflow" ]]; then echo "$(dirname "$0")/../.venv/bin/mlflow"
  else die "no mlflow executable: set MLFLOW or install sweeper (pip install -e '.[cluster]')"
  fi
}

pg_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then echo "$PG_BIN"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  local newest
  newest="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
  [[ -d "$newest" ]] || die "no PostgreSQL binaries: apt-get install postgresql, or set PG_BIN"
  echo "$newest"
}

# PostgreSQL refuses to run as root: as root, run its programs as $PG_USER.
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

backend_uri() { echo "${MLFLOW_BACKEND_URI:-postgresql+psycopg2://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME}"; }

health_url() {
  local host="$HOST"
  [[ "$host" == 0.0.0.0 ]] && host=127.0.0.1
  echo "http://$host:$PORT/health"
}

healthy() {
  python3 - "$(health_url)" <<'EOF'
import sys, urllib.request
try:
    sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=5).status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

# Alive and not a zombie: the server's parent is init, which in a container may never reap it.
alive() { [[ -r "/proc/$1/stat" ]] && [[ "$(sed -E 's/.*\) (.).*/\1/' "/proc/$1/stat")" != Z ]]; }

mlflow_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  alive "$pid" || return 1
  echo "$pid"
}

pg_running() { [[ -f "$PG_DATA/PG_VERSION" ]] && as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

start_postgres() {
  local bin
  bin="$(pg_bin)"
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    mkdir -p "$PG_DATA"
    if [[ "$(id -u)" == 0 ]]; then
      id "$PG_USER" >/dev/null 2>&1 || die "user $PG_USER missing: set PG_USER to an unprivileged user"
      chown "$PG_USER" "$PG_DATA"
      as_pg test -w "$PG_DATA" || die "$PG_USER cannot reach $PG_DATA: make its parents traversable"
    fi
    chmod 700 "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA" -U "$DB_USER" --auth=trust -E UTF8 >"$DATA/initdb.log" 2>&1 \
      || die "initdb failed; see $DATA/initdb.log"
  fi
  if ! pg_running; then
    # TCP on 127.0.0.1 only, no Unix socket (its default folder may not exist or be writable).
    as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w -t 120 \
      -o "-p $PG_PORT -h 127.0.0.1 -k ''" start >/dev/null \
      || die "PostgreSQL did not start; see $PG_DATA/server.log"
  fi
  if ! "$bin/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -d postgres -tAc \
      "select 1 from pg_database where datname = '$DB_NAME'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB_NAME"
  fi
}

start() {
  [[ -n "${MLFLOW_BACKEND_URI:-}" ]] || start_postgres
  if mlflow_pid >/dev/null; then
    echo "mlflow server already running (pid $(mlflow_pid)) at $(health_url)"
    return
  fi
  local app=()
  if [[ -n "${MLFLOW_APP_NAME:-}" ]]; then
    app=(--app-name "$MLFLOW_APP_NAME")
    [[ "$MLFLOW_APP_NAME" == basic-auth ]] && basic_auth
  fi
  mkdir -p "$ARTIFACTS" 2>/dev/null || true
  # Its own session, so `stop` ends the uvicorn workers with it (one process group).
  # Job execution (GenAI evaluation jobs) is off: sweeper does not use it, and it costs workers.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" \
    setsid "$(mlflow_bin)" server \
    --backend-store-uri "$(backend_uri)" \
    --serve-artifacts --artifacts-destination "$ARTIFACTS" \
    --host "$HOST" --port "$PORT" --workers "$WORKERS" "${app[@]}" \
    >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  until healthy; do
    mlflow_pid >/dev/null || die "mlflow server exited; see $LOG"
    ((SECONDS < deadline)) || die "mlflow server not healthy after ${START_TIMEOUT}s; see $LOG"
    sleep 0.5
  done
  echo "mlflow server running (pid $(cat "$PID_FILE")); MLFLOW_TRACKING_URI=http://$HOST:$PORT"
}

basic_auth() {
  if [[ -z "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
    export MLFLOW_AUTH_CONFIG_PATH="$DATA/basic_auth.ini"
    printf '[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///%s\nadmin_username = admin\n' \
      "$DATA/basic_auth.db" >"$MLFLOW_AUTH_CONFIG_PATH"
    [[ -f "$DATA/basic_auth.db" || -n "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ]] \
      || die "first start with basic auth: set MLFLOW_AUTH_ADMIN_PASSWORD (the admin user's password)"
  fi
  if [[ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]]; then
    [[ -f "$DATA/secret_key" ]] || (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$DATA/secret_key")
    MLFLOW_FLASK_SERVER_SECRET_KEY="$(cat "$DATA/secret_key")"
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
}

stop_mlflow() {
  local pid
  pid="$(mlflow_pid)" || { rm -f "$PID_FILE"; return 0; }
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

stop() {
  stop_mlflow
  if [[ -z "${MLFLOW_BACKEND_URI:-}" ]] && pg_running; then
    as_pg "$(pg_bin)/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null
  fi
  echo "stopped"
}

status() {
  local ok=0
  if [[ -n "${MLFLOW_BACKEND_URI:-}" ]]; then echo "postgresql: external ($MLFLOW_BACKEND_URI)"
  elif pg_running; then echo "postgresql: running on 127.0.0.1:$PG_PORT ($PG_DATA)"
  else echo "postgresql: stopped"; ok=1
  fi
  if healthy; then echo "mlflow: healthy at $(health_url)"
  elif mlflow_pid >/dev/null; then echo "mlflow: running (pid $(mlflow_pid)) but not healthy"; ok=1
  else echo "mlflow: stopped"; ok=1
  fi
  return "$ok"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
