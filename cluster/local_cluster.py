"""A real multi-node Ray cluster on one box, on 127.0.0.1: for tests and for trying cluster mode.

One head (GCS, dashboard with the Jobs API, `--num-cpus 0` so no trial runs there) and N worker
nodes, each its own `ray start --block` process tree with its own raylet, one CPU and a custom
resource naming it (`sweeper_node_w1: 1`, …). Killing a node's raylet is a node failure, as on
a real cluster.

Loopback only: Ray turns `127.0.0.1` into the machine's address for a multi-node cluster, so
the head runs with `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` (Ray's own switch that keeps the node
address on loopback; it only affects address resolution on Linux) and workers start through
`_ray_start_on_loopback`, which keeps the address they are given. Every node then advertises
and binds 127.0.0.1.

Ports come from environment variables with defaults far from Ray's own (6379, 8265, 10001),
so a user's Ray keeps running next to this one:

* `SWEEPER_RAY_PORT` (GCS, 46379), `SWEEPER_RAY_DASHBOARD_PORT` (Jobs API, 48265);
* `SWEEPER_RAY_NODE_PORTS` (46400): node i (head 0, w1 1, …) uses the 10 ports from
  base + 10·i (raylet, object manager, agents, metrics, the head's client server);
* `SWEEPER_RAY_DIR` (~/.cache/sweeper/local-ray): pids, ports and logs, for `down`/`status`.

Token authentication follows `RAY_AUTH_MODE` (set it to `token`, here and for the CLI, as on
a real cluster); unset, it is off on every node, whatever ~/.ray holds: a token file found
there would otherwise turn it on for the head alone and lock the workers and the CLI out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

PORTS_PER_NODE = 10
MAX_NODES = 16


@dataclass(frozen=True)
class Ports:
    gcs: int = 46379
    dashboard: int = 48265
    node_base: int = 46400  # node i: node_base + 10·i …

    @classmethod
    def from_env(cls) -> Ports:
        env = os.environ.get
        return cls(
            gcs=int(env("SWEEPER_RAY_PORT", cls.gcs)),
            dashboard=int(env("SWEEPER_RAY_DASHBOARD_PORT", cls.dashboard)),
            node_base=int(env("SWEEPER_RAY_NODE_PORTS", cls.node_base)),
        )

    @classmethod
    def free(cls) -> Ports:
        """Ports free right now (tests): two single ports and a block for MAX_NODES nodes."""
        gcs, dashboard = _free_port(), _free_port()
        for _ in range(200):
            base = _free_port()
            block = range(base, base + PORTS_PER_NODE * MAX_NODES)
            clear = {gcs, dashboard}.isdisjoint(block) and all(map(_is_free, block))
            if block[-1] < 65000 and clear:
                return cls(gcs=gcs, dashboard=dashboard, node_base=base)
        raise RuntimeError("no free block of ports for a local Ray cluster")

    def node(self, index: int) -> list[int]:
        start = self.node_base + PORTS_PER_NODE * index
        return list(range(start, start + PORTS_PER_NODE))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Node:
    name: str  # "head", "w1", "w2", …
    index: int
    pid: int  # the `ray start --block` process; its children are the node's processes
    log: str


@dataclass
class LocalCluster:
    state_dir: Path
    ports: Ports = field(default_factory=Ports.from_env)
    nodes: list[Node] = field(default_factory=list)

    # --- addresses --------------------------------------------------------------------------

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}"

    @property
    def temp_dir(self) -> Path:
        # Short and outside /tmp/ray: Unix socket paths are capped near 107 bytes, and
        # /tmp/ray/ray_current_cluster (what address="auto" reads) belongs to the user's Ray.
        return Path(f"/tmp/sweeper-ray-{self.ports.gcs}")

    # --- state file -------------------------------------------------------------------------

    @classmethod
    def load(cls, state_dir: Path) -> LocalCluster:
        path = Path(state_dir) / "cluster.json"
        if not path.exists():
            return cls(Path(state_dir))
        data = json.loads(path.read_text())
        return cls(Path(state_dir), Ports(**data["ports"]), [Node(**n) for n in data["nodes"]])

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {"ports": asdict(self.ports), "nodes": [asdict(n) for n in self.nodes]}
        (self.state_dir / "cluster.json").write_text(json.dumps(data, indent=2))

    # --- up / down --------------------------------------------------------------------------

    def up(self, workers: int, timeout: float = 180) -> None:
        """Start the head and `workers` worker nodes; return once all are alive."""
        if any(_alive(n.pid) for n in self.nodes):
            raise RuntimeError(f"a local cluster from {self.state_dir} is running; `down` first")
        self.nodes = []
        self.state_dir.mkdir(parents=True, exist_ok=True)
        p = self.ports.node(0)
        self._start(
            "head",
            0,
            [
                *("--head", "--port", self.ports.gcs, "--node-ip-address", "127.0.0.1"),
                *("--dashboard-host", "127.0.0.1", "--dashboard-port", self.ports.dashboard),
                *("--include-dashboard", "true", "--ray-client-server-port", p[6]),
                *("--num-cpus", 0, "--num-gpus", 0),
            ],
            {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
        )
        deadline = time.monotonic() + timeout
        head = self.nodes[-1]
        _wait(
            lambda: _http_ok(f"{self.dashboard_url}/api/version"),
            deadline,
            "the dashboard",
            node=head,
        )
        for _ in range(workers):
            self.add_worker(deadline=deadline)

    def add_worker(self, deadline: float | None = None) -> Node:
        """Start one more worker node (one CPU, resource `sweeper_node_<name>`)."""
        index = max((n.index for n in self.nodes), default=0) + 1
        if index >= MAX_NODES:
            raise RuntimeError(f"at most {MAX_NODES - 1} worker nodes")
        name = f"w{index}"
        node = self._start(
            name,
            index,
            [
                *("--address", self.gcs_address, "--node-ip-address", "127.0.0.1"),
                *("--num-cpus", 1, "--num-gpus", 0),
                *("--resources", json.dumps({f"sweeper_node_{name}": 1})),
            ],
            {},
        )
        resource = f"sweeper_node_{name}"
        _wait(
            lambda: any(resource in n.get("resources_total", {}) for n in self.alive_nodes()),
            deadline or time.monotonic() + 120,
            f"worker node {name} to join",
            node=node,
        )
        return node

    def _start(self, name: str, index: int, args: list, env: dict[str, str]) -> Node:
        p = self.ports.node(index)
        argv = [
            sys.executable,
            __file__,
            "_ray",
            "start",
            "--block",
            *args,
            *("--node-manager-port", p[0], "--object-manager-port", p[1]),
            *("--dashboard-agent-listen-port", p[2], "--dashboard-agent-grpc-port", p[3]),
            *("--runtime-env-agent-port", p[4], "--metrics-export-port", p[5]),
            *("--min-worker-port", 0, "--max-worker-port", 0),  # the OS picks: no collisions
            # Each node its own temp dir, as on separate machines: nodes sharing one would share
            # runtime_env caches, and one node's cleanup would delete a running job's cwd.
            *("--object-store-memory", 100 * 1024 * 1024, "--temp-dir", self.temp_dir / name),
            "--disable-usage-stats",
        ]
        log = self.state_dir / f"{name}.log"
        full_env = {
            # The loopback switch is the head's alone (below): a worker node started with it
            # is refused by Ray ("multi-node clusters are not supported"), and a test or shell
            # that runs `sweeper` in-process may have it set.
            **{k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"},
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
            # Jobs run `python …`: this Python, the one with sweeper's dependencies.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # A dead node is noticed in a few seconds, not Ray's default ~30 s.
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "5",
            **env,
        }
        full_env.pop("RAY_ADDRESS", None)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [str(a) for a in argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,  # outlives `up`; a Ctrl-C in the shell does not reach it
            )
        node = Node(name, index, proc.pid, str(log))
        self.nodes.append(node)
        self.save()
        return node

    def alive_count(self) -> int:
        return sum(1 for n in self.nodes if _alive(n.pid))

    def alive_nodes(self) -> list[dict]:
        """The dashboard's view: alive nodes with their resources."""
        try:
            with urllib.request.urlopen(
                f"{self.dashboard_url}/api/v0/nodes?limit=100&detail=1", timeout=10
            ) as r:
                rows = json.load(r)["data"]["result"]["result"]
        except (OSError, ValueError, KeyError):
            return []
        return [n for n in rows if n.get("state") == "ALIVE"]

    def raylet_pid(self, name: str) -> int:
        """The raylet process of node `name` (what a test kills to fail the node)."""
        import psutil

        node = next(n for n in self.nodes if n.name == name)
        for child in psutil.Process(node.pid).children(recursive=True):
            if child.name() == "raylet":
                return child.pid
        raise LookupError(f"node {name} has no raylet")

    def kill_node(self, name: str) -> None:
        """Fail node `name` abruptly: SIGKILL its raylet (`ray start` then ends the rest)."""
        os.kill(self.raylet_pid(name), signal.SIGKILL)

    def down(self, timeout: float = 30) -> None:
        """Stop every node (workers first), then whatever of theirs is left; forget the state."""
        import psutil

        for node in sorted(self.nodes, key=lambda n: -n.index):
            try:
                proc = psutil.Process(node.pid)
                tree = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            proc.send_signal(signal.SIGTERM)  # `ray start --block` stops its node's processes
            _, left = psutil.wait_procs(tree, timeout=timeout)
            for p in left:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(left, timeout=10)
        self.nodes = []
        self.save()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _http_ok(url: str) -> bool:
    """The server answers: 200, or 401/403 from a dashboard that wants Ray's auth token."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError as e:
        return e.code in (401, 403)
    except OSError:
        return False


def _wait(condition, deadline: float, what: str, node: Node | None = None) -> None:
    """Poll `condition`; a node process that exits meanwhile fails at once, with its log."""
    while not condition():
        if node is not None and not _alive(node.pid):
            raise RuntimeError(f"node {node.name} exited while waiting for {what}{_tail(node)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}{_tail(node)}")
        time.sleep(0.5)


def _tail(node: Node | None, lines: int = 40) -> str:
    if node is None:
        return ""
    try:
        text = Path(node.log).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"; the last lines of {node.log}:\n" + "\n".join(text)


def _ray_start_on_loopback(argv: list[str]) -> None:
    """`ray start …`, keeping 127.0.0.1 as the node's and the GCS's address.

    Ray maps a loopback address to the machine's (so remote nodes can reach it); on one box we
    want the opposite. The head gets the same effect from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    which worker nodes refuse.
    """
    import ray._private.services as services
    from ray.scripts.scripts import main

    services.resolve_ip_for_localhost = lambda host: host
    sys.argv = ["ray", *argv]
    main()


def default_state_dir() -> Path:
    return Path(os.environ.get("SWEEPER_RAY_DIR", Path.home() / ".cache/sweeper/local-ray"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_ray"]:
        _ray_start_on_loopback(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="local-ray", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start a head and N worker nodes")
    up.add_argument("workers", type=int, nargs="?", default=2)
    sub.add_parser("down", help="stop every node of the local cluster")
    sub.add_parser("status", help="nodes, their resources, the address to submit to")
    args = parser.parse_args(argv)
    state = default_state_dir()
    cluster = LocalCluster.load(state)
    if args.action == "up":
        if not cluster.nodes:
            cluster = LocalCluster(state)
        cluster.up(args.workers)
        print(f"local Ray: head + {args.workers} workers; logs in {state}")
        print(f"  export RAY_API_SERVER_ADDRESS={cluster.dashboard_url}  # sweeper's --address")
    elif args.action == "down":
        cluster.down()
        print("local Ray: stopped")
    else:
        nodes = cluster.alive_nodes() if cluster.alive_count() else []
        if not nodes:
            print("local Ray: not running")
            return 1
        print(f"local Ray at {cluster.dashboard_url} (GCS {cluster.gcs_address})")
        for n in nodes:
            resources = n.get("resources_total", {})
            shown = {k: v for k, v in resources.items() if k == "CPU" or k.startswith("sweeper_")}
            role = "head" if n.get("is_head_node") else "worker"
            print(f"  {role:<6} {n.get('node_ip')} {n.get('node_id', '')[:12]} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
