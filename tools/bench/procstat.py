"""What the processes and the machine report about themselves: CPU time, peak memory, CPU model.

Read from ``/proc`` (Linux), so the figures are the kernel's own accounting of each process, not
a guess from the outside: ``utime + stime`` of the process, of its children it has waited for
(``cutime + cstime``) and of its children still running, and ``VmHWM`` (peak resident memory).
"""

import os
import platform
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcessUsage:
    """One process's CPU seconds so far, with its children, and its memory now."""

    cpu_s: float
    rss_mb: float
    peak_rss_mb: float


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _own_cpu_ticks(pid: int, waited_children: bool = True) -> int:
    """CPU ticks of one process: utime + stime, and cutime + cstime if ``waited_children``."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state); utime, stime, cutime, cstime are fields 14 to 17.
    return sum(int(value) for value in fields[11 : 15 if waited_children else 13])


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s running children (and theirs), from every thread's child list."""
    found: list[int] = []
    try:
        threads = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for thread in threads:
        try:
            children = (thread / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found += [child, *_children(child)]
    return found


def process_usage(pid: int, children: bool = True) -> ProcessUsage:
    """CPU seconds used so far by ``pid`` (and its children), and its current and peak RSS.

    ``children=False`` counts the process alone: for one that started the others measured.
    """
    ticks = _own_cpu_ticks(pid, waited_children=children)
    for child in _children(pid) if children else ():
        try:
            ticks += _own_cpu_ticks(child)
        except OSError:  # exited meanwhile: its time is in the parent's cutime once waited for
            continue
    status = _status(pid)
    return ProcessUsage(
        cpu_s=ticks / _TICKS_PER_SECOND,
        rss_mb=status.get("VmRSS", 0) / 1024,
        peak_rss_mb=status.get("VmHWM", 0) / 1024,
    )


def _status(pid: int) -> dict[str, int]:
    """The ``kB`` fields of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``, ...)."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            values[name] = int(parts[0])
    return values


@dataclass(frozen=True)
class MachineCpu:
    """The whole machine's CPU time so far (every process, not only ours), in seconds."""

    busy_s: float
    total_s: float


def machine_cpu() -> MachineCpu:
    """The first line of ``/proc/stat``: time spent busy (incl. steal) and in total."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return MachineCpu((total - idle) / _TICKS_PER_SECOND, total / _TICKS_PER_SECOND)


def machine() -> dict[str, object]:
    """The CPU model, core counts and memory of this machine, for the report."""
    models: list[str] = []
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        name, _, value = (part.strip() for part in line.partition(":"))
        if name == "model name":
            models.append(value)
        elif name == "physical id":
            physical = value
        elif name == "core id":
            core = value
            cores.add((physical, core))
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
    return {
        "cpu_model": models[0] if models else platform.processor() or "unknown",
        "logical_cpus": len(models) or os.cpu_count(),
        "physical_cores": len(cores) or None,
        "cpus_available_to_benchmark": len(os.sched_getaffinity(0)),
        "memory_total_mb": round(int(meminfo[1]) / 1024),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
