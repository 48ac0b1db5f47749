"""The Fastfood Triton kernels compiled for real GPUs on a machine without one.

Triton's interpreter (the CPU tests) runs NumPy semantics: it cannot show a compile failure, a
register spill or a shared-memory overflow. This compiles every specialisation the trainer
launches (`fastfood.triton.launch.trainer_launches`) for sm_80 (A100) and sm_90 (H100/H200) with
Triton's own compiler and bundled ptxas, and reads ptxas' report of registers and spills.

Results are cached in `cache_dir()` under a key of the Triton version, the target, num_warps and
`ASTSource.hash()`: the source text of the kernel and of every `@triton.jit` function it calls
(`fastfood/triton/kernels.py`, `generator.py`), the line each starts at, the names and values of the
tl.constexpr globals they read, and the launch's signature and constexprs. Module names are not
in it, but line numbers are: moving a kernel, or editing lines above it, is a new key. A warm run
takes seconds. A record committed beside the tests (`write_record`, `build_all(record=…)`;
refreshed by `python bench/kernel.py --compile-only --n 1 1024 2048 32768 1048576 --record`)
seeds the cache of a clean clone; an entry whose key no longer matches is never read, so a stale
record only costs time (a cold CI run compiles everything).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sweeper.projection.fastfood.triton.launch import INTERPRETED, Launch, trainer_launches

ARCHS = (80, 90)  # A100; H100 and H200
# The block sizes CI compiles: each path's smallest and largest n (n = 1 has no WHT stage at
# all; n = 1024 holds the most values per register transform; n = 2048 is the first staged
# size; n = 2^15 the largest block of generator 3; n = 2^20 the most staged passes).
# `bench/kernel.py --compile-only` does all twenty-one.
CI_BLOCKS = (1, 1024, 2048, 32768, 2**20)


class ToolMissing(RuntimeError):
    """The compiler toolchain (Triton's bundled ptxas) is not where Triton looks for it."""


@dataclass
class Build:
    """One specialisation built for one GPU architecture."""

    label: str
    family: str
    arch: int
    registers: int | None = None
    spill_stores: int | None = None  # bytes
    spill_loads: int | None = None  # bytes
    shared_bytes: int | None = None
    seconds: float = 0.0
    cached: bool = False
    error: str | None = None

    @property
    def spills(self) -> int:
        return (self.spill_stores or 0) + (self.spill_loads or 0)


def cache_dir() -> Path:
    """$SWEEPER_KERNEL_CACHE, else ~/.cache/sweeper/kernel-builds."""
    default = Path.home() / ".cache" / "sweeper" / "kernel-builds"
    return Path(os.environ.get("SWEEPER_KERNEL_CACHE") or default)


def ptxas(arch: int) -> str:
    """The ptxas Triton itself runs for `arch`; ToolMissing (with the fix) if it is absent."""
    from triton.backends.nvidia.compiler import get_ptxas

    try:
        path = get_ptxas(arch).path
    except Exception as e:  # the knob raises when no candidate file exists
        path, why = None, str(e)
    if not path or not os.access(path, os.X_OK):
        raise ToolMissing(
            f"no ptxas for sm_{arch} ({path or why}): Triton {triton.__version__}'s wheel bundles "
            "one under triton/backends/nvidia/bin; reinstall triton, or point TRITON_PTXAS_PATH "
            "at a CUDA toolkit's ptxas"
        )
    return path


def source(launch: Launch) -> ASTSource:
    """The ASTSource a launch compiles: pointer arguments 16-byte aligned, as torch allocates."""
    constexprs = dict(launch.constexprs)
    signature = dict(launch.signature) | {name: "constexpr" for name in constexprs}
    names = launch.kernel.arg_names
    attrs = {
        (names.index(name),): [["tt.divisibility", 16]]
        for name, kind in launch.signature
        if kind.startswith("*")
    }
    return ASTSource(fn=launch.kernel, signature=signature, constexprs=constexprs, attrs=attrs)


def _ptxas_log(ptx: str, arch: int) -> str:
    """`ptxas -v` on `ptx`, with the flags Triton compiles with (when Triton's own log is not
    at hand: its cache already held the binary)."""
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    flags = [
        "-v",
        "-lineinfo",
        "--regAllocOptLevel=2",
        f"--gpu-name={sm_arch_from_capability(arch)}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        run = subprocess.run(
            [ptxas(arch), *flags, str(path), "-o", f"{path}.o"],
            capture_output=True,
            text=True,
        )
    if run.returncode:
        raise RuntimeError(f"ptxas failed: {' '.join(run.stderr.split())[:500]}")
    return run.stderr


def _report(log: str) -> dict[str, int]:
    """Registers and spill bytes from a `ptxas -v` log."""
    found = {}
    for key, pattern in {
        "registers": r"Used (\d+) registers",
        "spill_stores": r"(\d+) bytes spill stores",
        "spill_loads": r"(\d+) bytes spill loads",
    }.items():
        match = re.search(pattern, log)
        if match is None:
            raise RuntimeError(f"ptxas -v printed no {key!r}: {log[-500:]}")
        found[key] = int(match.group(1))
    return found


def _cache_path(launch: Launch, arch: int) -> Path:
    key = f"{triton.__version__}|{source(launch).hash()}|sm_{arch}|warps={launch.num_warps}"
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _cached(launch: Launch, arch: int) -> bool:
    try:
        return _cache_path(launch, arch).is_file()
    except Exception:  # the source does not even parse: build() reports it
        return False


def build(launch: Launch, arch: int, use_cache: bool = True) -> Build:
    """Compile `launch` for sm_`arch` (from the cache when its key is there)."""
    result = Build(label=launch.label, family=launch.family, arch=arch)
    start = time.perf_counter()
    if not isinstance(launch.kernel, triton.runtime.JITFunction):
        raise TypeError(
            f"{launch.family} is {type(launch.kernel).__name__}, not a JITFunction: this process "
            "imported triton under TRITON_INTERPRET=1; use build_all (its workers start without it)"
        )
    try:
        src = source(launch)
        path = _cache_path(launch, arch)
        if use_cache and path.is_file():
            entry = json.loads(path.read_text())
            entry.pop("label", None)
            result.__dict__.update(entry, cached=True)
            result.seconds = time.perf_counter() - start
            return result
        # Triton runs ptxas -v itself; its log (printed when asked) saves a second ptxas run,
        # the slow part at 255 registers. One build per process, so stdout is ours alone.
        log = io.StringIO()
        with contextlib.redirect_stdout(log), triton.knobs.nvidia.scope():
            triton.knobs.nvidia.dump_ptxas_log = True
            compiled = triton.compile(
                src, target=GPUTarget("cuda", arch, 32), options={"num_warps": launch.num_warps}
            )
        result.shared_bytes = int(compiled.metadata.shared)
        text = log.getvalue()
        if "registers" not in text:  # Triton's cache had the binary: ptxas did not run
            text = _ptxas_log(compiled.asm["ptx"], arch)
        result.__dict__.update(_report(text))
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = {k: getattr(result, k) for k in ("registers", "spill_stores", "spill_loads")}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**kept, "shared_bytes": result.shared_bytes}))
        tmp.replace(path)  # atomic: a concurrent run never reads half a file
    except ToolMissing:
        raise
    except Exception as e:  # a compile error is the finding, not a crash of the check
        result.error = f"{type(e).__name__}: {' '.join(str(e).split())[:2000]}"
    result.seconds = time.perf_counter() - start
    return result


@contextlib.contextmanager
def _without(variable: str):
    """The environment less `variable` (for the worker processes started inside)."""
    value = os.environ.pop(variable, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[variable] = value


@lru_cache(maxsize=4)
def _launches(ns: tuple[int, ...], dtypes: tuple) -> list[Launch]:
    return trainer_launches(list(ns), dtypes)


def _build_job(ns: tuple[int, ...], dtypes: tuple, index: int, arch: int, use_cache: bool):
    return build(_launches(ns, dtypes)[index], arch, use_cache)


def _seed(record: Path) -> None:
    """Copy a committed record's entries into the cache (keys are content hashes)."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    for key, entry in json.loads(record.read_text())["builds"].items():
        path = folder / f"{key}.json"
        if not path.exists():
            path.write_text(json.dumps(entry))


def write_record(record: Path, ns=CI_BLOCKS, archs=ARCHS) -> int:
    """Write the cached builds of these specialisations to `record` (after `build_all`)."""
    dtypes = (torch.float32, torch.bfloat16)
    builds = {}
    for launch in _launches(tuple(ns), dtypes):
        for arch in archs:
            path = _cache_path(launch, arch)
            if path.is_file():
                builds[path.stem] = {"label": f"sm_{arch} {launch.label}"}
                builds[path.stem] |= json.loads(path.read_text())
    payload = {"triton": triton.__version__, "builds": dict(sorted(builds.items()))}
    record.write_text(json.dumps(payload, indent=0) + "\n")
    return len(builds)


def build_all(
    ns=CI_BLOCKS,
    archs=ARCHS,
    dtypes=(torch.float32, torch.bfloat16),
    workers: int | None = None,
    use_cache: bool = True,
    record: Path | None = None,
) -> list[Build]:
    """Every trainer specialisation at block sizes `ns`, for every arch; misses are compiled
    in `workers` processes (default: one per CPU). `record`: a committed record to seed the
    cache from."""
    for arch in archs:
        ptxas(arch)  # fail once, up front, if a tool is missing
    if use_cache and record is not None and record.is_file():
        _seed(record)
    ns, dtypes = tuple(ns), tuple(dtypes)
    launches = _launches(ns, dtypes)
    jobs = [(i, arch) for i in range(len(launches)) for arch in archs]
    results: dict[tuple[int, int], Build] = {}
    # Hits are read here (no pool start-up when everything is cached) unless this process's
    # kernels are the interpreter's (TRITON_INTERPRET=1 before triton's import): those do not
    # compile, so every job then goes to the workers, which start without the variable.
    if use_cache and not INTERPRETED:
        for i, arch in jobs:
            if _cached(launches[i], arch):
                results[(i, arch)] = build(launches[i], arch)
    missing = [job for job in jobs if job not in results]
    if missing:
        context = multiprocessing.get_context("spawn")  # no fork of a process holding torch
        workers = min(len(missing), workers or os.cpu_count() or 1)
        with (
            _without("TRITON_INTERPRET"),
            ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool,
        ):
            futures = {job: pool.submit(_build_job, ns, dtypes, *job, use_cache) for job in missing}
            results.update({job: future.result() for job, future in futures.items()})
    return [results[job] for job in jobs]


def table(builds: list[Build]) -> str:
    """One line per build: what a test prints and the bench writes beside its JSON."""
    lines = [f"{'arch':<6}{'regs':>5}{'spill B':>8}{'smem B':>8}{'s':>6}  kernel"]
    for b in builds:
        if b.error:
            lines.append(f"sm_{b.arch:<3}{'FAILED':>21}{b.seconds:>6.1f}  {b.label}: {b.error}")
            continue
        s = "cache" if b.cached else f"{b.seconds:.1f}"
        lines.append(
            f"sm_{b.arch:<3}{b.registers:>5}{b.spills:>8}{b.shared_bytes:>8}{s:>6}  {b.label}"
        )
    return "\n".join(lines)


def as_rows(builds: list[Build]) -> list[dict]:
    return [{**asdict(b), "spill_bytes": b.spills} for b in builds]
