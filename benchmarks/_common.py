"""Shared helpers for the benchmark scripts: device choice, timing, peak memory, result tables.

Every benchmark runs from the repository root as a module (``python -m benchmarks.<name>``) and writes its
results into one section of ``docs/BENCHMARKS.md`` with :func:`write_benchmarks_section`, which replaces only
that section, so several benchmarks can share the file.

Memory:
* host: :func:`peak_rss_bytes` reads ``VmHWM`` (the peak resident set) from ``/proc/self/status``. It only
  grows, so measure each method in a fresh process (:func:`run_in_subprocess`) or call
  :func:`reset_peak_rss` first.
* CUDA: :func:`cuda_peak_bytes` after :func:`reset_cuda_peak`.
* :func:`return_freed_memory` makes glibc give freed blocks back at once, so the resident set (and its peak)
  follows the live tensors; call it before measuring peaks in-process.

Contention: :class:`CpuMeter` reads ``/proc/stat`` and this process's CPU time around a measurement, so a run
can say how much CPU other processes used meanwhile (:data:`CONTENDED_CORES` and more: contended).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = REPO_ROOT / "docs" / "BENCHMARKS.md"

__all__ = [
    "BENCHMARKS_MD",
    "CONTENDED_CORES",
    "REPO_ROOT",
    "CpuMeter",
    "CpuUse",
    "Timing",
    "cuda_peak_bytes",
    "current_rss_bytes",
    "format_bytes",
    "machine_description",
    "markdown_table",
    "peak_rss_bytes",
    "pick_device",
    "read_benchmarks_section",
    "reset_cuda_peak",
    "reset_peak_rss",
    "return_freed_memory",
    "run_in_subprocess",
    "synchronize",
    "time_fn",
    "write_benchmarks_section",
]


def pick_device(name: str) -> torch.device:
    """Parse ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; fail early, naming the fix, if CUDA is absent."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name} asked for CUDA but torch sees no GPU; use --device cpu")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so a wall-clock timer measures the work and not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of ``repeats`` timed calls after ``warmup`` untimed ones."""

    seconds: tuple[float, ...]
    warmup: int

    @property
    def median(self) -> float:
        """Median of the timed calls, in seconds."""
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        """Fastest timed call, in seconds."""
        return min(self.seconds)

    @property
    def mean(self) -> float:
        """Mean of the timed calls, in seconds."""
        return statistics.fmean(self.seconds)


def time_fn(fn: Callable[[], object], *, device: torch.device, warmup: int = 1, repeats: int = 3) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed, synchronising around each call."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return Timing(seconds=tuple(seconds), warmup=warmup)


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only)")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``VmHWM``), in bytes."""
    return _proc_status_kib("VmHWM") * 1024


def current_rss_bytes() -> int:
    """Current resident set size of this process (``VmRSS``), in bytes."""
    return _proc_status_kib("VmRSS") * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0: write 5 to ``/proc/self/clear_refs``).

    Returns False where the kernel or a sandbox refuses; the peak then includes what ran before.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def return_freed_memory() -> bool:
    """Make glibc return every freed block over 64 KiB to the kernel at once (``mallopt``).

    By default glibc keeps freed memory in its heaps and raises its mmap threshold as large blocks come and
    go, so the resident set stays high after a peak and a later, smaller peak is invisible. With a fixed
    threshold and no trim slack the RSS follows torch's live tensors. Returns False where libc has no
    ``mallopt`` (not glibc).
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 64 * 1024)) and bool(libc.mallopt(m_trim_threshold, 0))


# Other processes using more than this many cores on average during a measurement make it contended.
CONTENDED_CORES = 0.10


@dataclass(frozen=True)
class CpuUse:
    """CPU time during one measurement: the machine's busy time, this process's own, the hypervisor's steal."""

    wall: float
    own: float  # user + system seconds of this process (all its threads) and of children it waited for
    busy: float  # user + nice + system + irq + softirq seconds of every CPU, this process included
    steal: float  # seconds the hypervisor ran something else on our virtual CPUs

    @property
    def others_cores(self) -> float:
        """Average cores used by other processes (and stolen by the hypervisor) over the wall time."""
        if self.wall <= 0:
            return 0.0
        return (max(0.0, self.busy - self.own) + self.steal) / self.wall

    @property
    def contended(self) -> bool:
        """Whether others used more than :data:`CONTENDED_CORES` cores meanwhile."""
        return self.others_cores > CONTENDED_CORES


def _proc_stat_seconds() -> tuple[float, float]:
    """(busy, steal) seconds of all CPUs since boot, from the first line of ``/proc/stat``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """``with CpuMeter() as meter: ...`` then ``meter.use``: the :class:`CpuUse` of the block.

    Subprocesses the block ran and waited for count as this process's own work (``run_in_subprocess``).
    ``/proc/stat`` counts in clock ticks (10 ms), so measurements shorter than about a second read coarse.
    """

    use: CpuUse

    def __enter__(self) -> Self:
        self._busy, self._steal = _proc_stat_seconds()
        self._own = _own_cpu_seconds()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        own = _own_cpu_seconds() - self._own
        busy, steal = _proc_stat_seconds()
        self.use = CpuUse(wall=wall, own=own, busy=busy - self._busy, steal=steal - self._steal)


def reset_cuda_peak(device: torch.device) -> None:
    """Start a new CUDA peak-memory window (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peak_bytes(device: torch.device) -> int:
    """Peak bytes allocated by torch on ``device`` since the last reset (0 on CPU)."""
    if device.type != "cuda":
        return 0
    return int(torch.cuda.max_memory_allocated(device))


def run_in_subprocess(module: str, args: Sequence[str], *, timeout_s: float = 1800.0) -> dict:
    """Run ``python -m <module> <args>`` from the repository root; its last stdout line must be JSON.

    A fresh process per measurement keeps peak-RSS numbers independent of what ran before.
    """
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"python -m {module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        raise RuntimeError(f"python -m {module} printed nothing; expected a JSON line")
    return json.loads(lines[-1])


def format_bytes(n: float) -> str:
    """Human-readable bytes, binary units (``1.23 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def machine_description(device: torch.device) -> str:
    """One line naming the machine: CPU count, GPU name if used, torch version."""
    cpus = os.cpu_count() or 0
    if device.type == "cuda":
        gpu = torch.cuda.get_device_name(device)
        return f"{cpus} vCPU, {gpu}, torch {torch.__version__}"
    return f"{cpus} vCPU CPU, no GPU, torch {torch.__version__}, {platform.machine()}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; cells are str()-ed."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def read_benchmarks_section(title: str, *, path: Path = BENCHMARKS_MD) -> str | None:
    """The body of the ``## <title>`` section of ``docs/BENCHMARKS.md`` (without its heading), or None."""
    if not path.exists():
        return None
    lines = path.read_text().splitlines()
    heading = f"## {title}"
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1 : end]).strip("\n")


def write_benchmarks_section(title: str, body: str, *, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the ``## <title>`` section of ``docs/BENCHMARKS.md`` with ``body``.

    Only that section changes; the file is re-read under a lock right before writing, because other
    benchmarks write their own sections of the same file.
    """
    from filelock import FileLock

    if title.startswith("#"):
        raise ValueError(f"pass the section title without '#', got {title!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    heading = f"## {title}"
    # the lock lives outside the tree so that it never shows up as a stray file in docs/
    lock = (
        Path(tempfile.gettempdir())
        / f"adrender-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]}.lock"
    )
    with FileLock(str(lock)):
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        lines = text.splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
        new = [heading, "", *body.strip("\n").splitlines(), ""]
        if start is None:
            while lines and not lines[-1].strip():
                lines.pop()
            lines += ["", *new]
        else:
            end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            lines[start:end] = new
        path.write_text("\n".join(lines).rstrip("\n") + "\n")
