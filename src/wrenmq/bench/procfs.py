"""CPU time and memory of a process, read from Linux's /proc (no psutil).

The benchmark reads these for the broker and for every generator process, so a reader can see
which side saturated its core.
"""

from __future__ import annotations

import os
import resource

__all__ = ["busy_seconds", "cpu_seconds", "raise_nofile_limit", "rss_kib"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads); 0.0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0.0
    # The command name (field 2) may contain spaces; the fields after it start behind the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of stat


def busy_seconds(cpus: set[int] | frozenset[int]) -> float:
    """Seconds the given CPUs spent running processes (user, nice, system), from /proc/stat."""
    total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *fields = line.split()
                if int(name[3:]) in cpus:
                    # user + nice + system: process time; interrupt time (loopback TCP's softirqs, which
                    # the brokers themselves cause) and idle are left out.
                    total += int(fields[0]) + int(fields[1]) + int(fields[2])
    except (OSError, ValueError):
        return 0.0
    return total / _TICKS


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in KiB; 0 if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def raise_nofile_limit(wanted: int | None = None) -> int:
    """Raise this process's open-file soft limit towards ``wanted`` (default: the hard limit).

    Past the hard limit too where that is allowed (root, up to the kernel's ``fs.nr_open``): tens of
    thousands of connections need as many descriptors in the broker and in the generator.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted is not None and hard != resource.RLIM_INFINITY and wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass  # not permitted: settle for the hard limit
    target = hard if wanted is None or hard == resource.RLIM_INFINITY else min(wanted, hard)
    if wanted is not None and hard == resource.RLIM_INFINITY:
        target = wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft
