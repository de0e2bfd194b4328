"""CPU time of a process tree from ``/proc``, split by process kind and by thread (Linux only).

The benchmarks read it to say where CPU per query goes: the driver (this process), the local backend's
workers, or the Ray cluster's processes (GCS, raylets, Serve controller, replicas, agents), told apart
by command line. psutil would add a dependency for two ``/proc`` reads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

# Process kinds of the CPU split, by command line (first match wins); the root process is "driver".
KINDS = (
    ("serve replicas", "ray::ServeReplica"),
    ("serve controller", "ray::ServeController"),
    ("serve proxies", "ray::ProxyActor"),
    ("gcs", "gcs_server"),
    ("raylets", "/raylet"),
    ("dashboard agents", "ray::DashboardAgent"),
    ("runtime-env agents", "ray::RuntimeEnvAgent"),
    ("dashboard (API server)", "dashboard/dashboard.py"),
    ("log monitors", "log_monitor"),
    ("autoscaler monitor", "monitor.py"),
    ("idle ray workers", "ray::IDLE"),
)


def _kind(pid: int, root: int) -> str:
    if pid == root:
        return "driver"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    local = "multiprocessing" in cmd  # the local backend's worker processes (spawned)
    return next((kind for kind, marker in KINDS if marker in cmd), "local workers" if local else "other")


def cpu_snapshot(root: int | None = None) -> dict[int, tuple[str, float]]:
    """``pid -> (kind, CPU seconds so far)`` of ``root`` (default: this process) and its descendants."""
    root = root or os.getpid()
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (pp, _) in stats.items() if pp == parent and p not in found]
        found.update(children)
        frontier += children
    return {p: (_kind(p, root), stats[p][1]) for p in found if p in stats}


def cpu_split(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per process kind between two snapshots.

    A process alive at both counts its difference, one started in between all of its CPU; one that
    died in between counts nothing (its CPU left with it), so a cell where replicas die under-counts.
    """
    out: dict[str, float] = {}
    for pid, (kind, cpu) in after.items():
        used = cpu - before[pid][1] if pid in before else cpu
        out[kind] = out.get(kind, 0.0) + max(0.0, used)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def thread_snapshot(pids: Sequence[int]) -> dict[tuple[int, int], tuple[str, float]]:
    """``(pid, tid) -> (thread name, CPU seconds so far)`` of every thread of ``pids``."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        stat = f.read()
                    fields = stat.rsplit(")", 1)[1].split()
                    out[(pid, int(tid))] = (stat[stat.index("(") + 1: stat.rindex(")")],
                                            (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_split(before: dict[tuple[int, int], tuple[str, float]],
                 after: dict[tuple[int, int], tuple[str, float]], kinds: dict[int, str]) -> dict[str, float]:
    """CPU seconds per ``"kind: thread name"`` between two :func:`thread_snapshot` calls."""
    out: dict[str, float] = {}
    for (pid, tid), (name, cpu) in after.items():
        key = f"{kinds.get(pid, 'other')}: {name}"
        out[key] = out.get(key, 0.0) + max(0.0, cpu - before.get((pid, tid), (name, 0.0))[1])
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
