"""Memory of a process and its children, from Linux's /proc: RSS, and PSS for forked families."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

KIB_PER_MIB = 1024


def _field_kib(path: Path, name: str) -> float:
    """Return a "Name:   123 kB" field of a /proc file, in KiB."""
    for line in path.read_text().splitlines():
        if line.startswith(f"{name}:"):
            return float(line.split()[1])
    raise LookupError(f"no {name} in {path}")


def rss_mib(pid: int) -> float:
    """Return the process's resident set size (VmRSS) in MiB."""
    return _field_kib(Path(f"/proc/{pid}/status"), "VmRSS") / KIB_PER_MIB


def pss_mib(pid: int) -> float:
    """Return the process's proportional set size in MiB: shared pages count split among their sharers."""
    return _field_kib(Path(f"/proc/{pid}/smaps_rollup"), "Pss") / KIB_PER_MIB


@dataclass(frozen=True)
class Footprint:
    """An idle process's memory, with its children's (a persistent work horse)."""

    rss: float
    children_rss: float | None  # None: no child process
    pss_total: float  # the process and its children: what they take together

    @property
    def total_rss(self) -> float:
        """Return the RSS of the process and its children, shared pages counted twice."""
        return self.rss + (self.children_rss or 0.0)


def footprint(pid: int) -> Footprint:
    """Return the memory of a process and of the processes below it."""
    children: list[int] = []
    with suppress(psutil.NoSuchProcess):
        children = [child.pid for child in psutil.Process(pid).children(recursive=True)]
    children_rss = sum(rss_mib(child) for child in children) if children else None
    return Footprint(rss_mib(pid), children_rss, pss_mib(pid) + sum(pss_mib(child) for child in children))
