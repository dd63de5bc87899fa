"""The environment a run was measured in: recorded in every run record."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from bench import DISTRIBUTION
from bench.datasets.verify import describe
from bench.errors import BenchError

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding bench/ (git runs there)


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA on a machine without it is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"--device {requested}: CUDA is not available on this machine; use --device cpu or auto")
        device = torch.device(requested)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BenchError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise BenchError(f"--device {requested!r}: expected cpu, cuda, cuda:N or auto")


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # Uncommitted changes to the code, that is: stored results and generated reports do not count
    # (a run adds records; regenerating committed results deletes or replaces some).
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results", ":(exclude)report")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if not key:
                break  # the first processor's block is enough
            fields.setdefault(key, value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """The first processor's flags."""
    return set(_cpuinfo().get("flags", "").split())


def cpu_identity() -> dict[str, Any]:
    """What decides a CPU's arithmetic beyond its name (a VM may call every EPYC "AMD EPYC"): the
    instruction set torch dispatches to, vendor, family, model and stepping, and a hash of its flags."""
    fields = _cpuinfo()
    flags = fields.get("flags")
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "id": " ".join(fields[k] for k in ("vendor_id", "cpu family", "model", "stepping") if k in fields) or None,
        "flags_sha256": hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:16] if flags else None,
    }


def data_checks() -> str:
    return describe()


def environment(device: torch.device) -> dict[str, Any]:
    cuda = device.type == "cuda"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_identity": cpu_identity(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_runtime": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "packages": {"bench": _package_version(DISTRIBUTION),
                     **{name: _package_version(name) for name in ("numpy", "pandas", "learn2learn")}},
        "git": git_state(),
        "data_checksums": data_checks(),
    }
