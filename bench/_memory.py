"""Peak resident memory of a server's process tree, read from /proc/<pid>/status (VmHWM)."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from types import TracebackType

PROC = Path("/proc")
SAMPLE_INTERVAL_S = 0.25  # VmHWM is a kernel-kept peak: sampling only follows the tree
RESET_PEAK_RSS = "5"  # proc(5), /proc/<pid>/clear_refs: reset VmHWM to the current RSS


class PeakMemory:
    """Samples a process and its descendants while the `with` block runs.

    VmHWM is reset at entry where the kernel allows it, so the peak belongs to this phase alone
    and not to an earlier one; `reset` in the result says whether it was. Descendants (a server's
    worker processes) are summed, each at its own peak: an upper bound on the tree's true peak.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.reset = False
        self._peaks_kib: dict[int, int] = {}
        self._max_rss_kib = 0
        self._max_pss_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> PeakMemory:
        self.reset = all(_reset_peak(pid) for pid in _process_tree(self.pid))
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    @property
    def peak_mib(self) -> float:
        return sum(self._peaks_kib.values()) / 1024

    @property
    def peak_pss_mib(self) -> float:
        """The tree's largest sampled PSS: each shared page counted once, split among its users."""
        return self._max_pss_kib / 1024

    def result(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "processes": len(self._peaks_kib),
            "peak_mib": round(self.peak_mib, 1),
            "max_sampled_rss_mib": round(self._max_rss_kib / 1024, 1),
            "max_sampled_pss_mib": round(self.peak_pss_mib, 1),
            "hwm_reset": self.reset,
        }

    def _run(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def _sample(self) -> None:
        rss_total = pss_total = 0
        for pid in _process_tree(self.pid):
            status = _read_status(pid)
            if "VmHWM" in status:
                self._peaks_kib[pid] = max(self._peaks_kib.get(pid, 0), status["VmHWM"])
                rss_total += status.get("VmRSS", 0)
                pss_total += _read_pss(pid)
        self._max_rss_kib = max(self._max_rss_kib, rss_total)
        self._max_pss_kib = max(self._max_pss_kib, pss_total)


def _process_tree(root: int) -> list[int]:
    """`root` and every process descended from it, found by the parent ids in /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The command name may hold spaces and parentheses: split after the last ')'.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def _read_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/<pid>/status; empty once the process has gone."""
    values = {}
    with contextlib.suppress(OSError):
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if rest.strip().endswith(" kB"):
                values[key] = int(rest.split()[0])
    return values


def _read_pss(pid: int) -> int:
    """Proportional set size in kB (/proc/<pid>/smaps_rollup); 0 once the process has gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    try:
        (PROC / str(pid) / "clear_refs").write_text(RESET_PEAK_RSS)
    except OSError:
        return False
    return True
