"""How many CPU threads a training run uses, chosen from what the machine has free, and how idle
OpenMP threads wait: the runner's process-wide CPU policy (`rrnx fit`, `rrnx bench`).

With two threads on a 2-core machine and one other busy process, every parallel region waits for
the thread that shares its core with that process, and libgomp's threads spin at each barrier
(GOMP_SPINCOUNT 300,000 by default) on the CPU time the others need: an RRN epoch went from 69 s
(one thread) to 209 s (docs/benchmarks.md, issue 10). So:

* OMP_WAIT_POLICY=PASSIVE (unless the user set it): a thread that waits sleeps at once. libgomp
  reads it when it loads, i.e. at `import torch`, so the CLI sets it before anything imports torch
  (`prefer_passive_waits`).
* The thread count follows the cores the OTHER processes leave free, measured from /proc/stat over
  the CPUs this process may run on (its affinity) minus this process's own CPU time: at the start
  (a 0.25 s sample) and again at most every `interval_s` at a batch boundary (`ThreadPolicy`), so a
  job that starts or stops mid-run is followed. An explicit thread count (`--threads`,
  `trainer.num_threads`) turns the policy off.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def prefer_passive_waits() -> None:
    """OMP_WAIT_POLICY=PASSIVE unless set; effective only before torch (libgomp) is first imported."""
    os.environ.setdefault(WAIT_POLICY_ENV, "PASSIVE")


def allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


@dataclass
class CpuSample:
    wall: float  # seconds (monotonic)
    busy: float  # seconds of non-idle time, summed over the allowed CPUs (steal counts as busy)
    own: float  # this process's CPU seconds (all its threads)


def cpu_sample(cpus: list[int]) -> CpuSample | None:
    """Busy time of `cpus` from /proc/stat; None where there is no /proc/stat."""
    try:
        lines = open("/proc/stat").read().splitlines()
    except OSError:
        return None
    wanted, busy, tick = {f"cpu{c}" for c in cpus}, 0, os.sysconf("SC_CLK_TCK")
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            values = [int(v) for v in fields[1:]]
            busy += sum(values) - values[3] - values[4]  # all but idle and iowait
    times = os.times()
    return CpuSample(time.monotonic(), busy / tick, times.user + times.system)


def free_cores(before: CpuSample, after: CpuSample, n_cpus: int) -> float:
    """Cores not used by other processes between two samples."""
    wall = max(after.wall - before.wall, 1e-6)
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own)) / wall
    return max(0.0, n_cpus - others)


def threads_for(free: float, n_cpus: int) -> int:
    """One thread per free core, a core counting as free when others leave at least 0.8 of it: a
    thread that has to share its core holds up every parallel region of the others."""
    return max(1, min(n_cpus, int(free + 0.2)))


class ThreadPolicy:
    """Sets torch's thread count from the free cores: `start()` once, `adjust()` at batch boundaries
    (it re-measures at most every interval_s, over the time since its last measurement)."""

    def __init__(self, interval_s: float = 5.0):
        self.cpus = allowed_cpus()
        self.interval_s = interval_s
        self.last: CpuSample | None = None
        self.history: list[int] = []  # thread counts chosen, in order

    def start(self, sample_s: float = 0.25) -> int:
        import torch

        first = cpu_sample(self.cpus)
        if first is None:
            return torch.get_num_threads()
        time.sleep(sample_s)
        self.last = first
        return self._apply(cpu_sample(self.cpus))

    def adjust(self) -> None:
        if self.last is None:
            return
        now = time.monotonic()
        if now - self.last.wall >= self.interval_s:
            self._apply(cpu_sample(self.cpus))

    def _apply(self, sample: CpuSample) -> int:
        import torch

        threads = threads_for(free_cores(self.last, sample, len(self.cpus)), len(self.cpus))
        self.last = sample
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        if not self.history or self.history[-1] != threads:
            self.history.append(threads)
        return threads
