"""The runner's CPU policy (rrnx/threads.py): one thread per core the other processes leave free,
revisited during training; an explicit thread count turns it off. Timings: docs/benchmarks.md."""

import pytest
import torch

from rrnx import threads
from rrnx.threads import CpuSample, ThreadPolicy, free_cores, threads_for


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_free_cores_subtract_this_process_own_cpu_time():
    before = CpuSample(wall=0.0, busy=0.0, own=0.0)
    # 10 s on 2 cores: 19 s busy, 10 of them this process's: the others used 0.9 core
    assert free_cores(before, CpuSample(10.0, 19.0, 10.0), 2) == pytest.approx(1.1)
    assert free_cores(before, CpuSample(10.0, 1.0, 1.0), 2) == pytest.approx(2.0)  # idle but for us
    assert free_cores(before, CpuSample(10.0, 40.0, 0.0), 2) == 0.0  # more busy than cores: none free


@pytest.mark.parametrize("free, expected", [(2.0, 2), (1.85, 2), (1.7, 1), (1.1, 1), (0.0, 1), (7.9, 4)])
def test_a_core_counts_when_others_leave_most_of_it(free, expected):
    assert threads_for(free, 4 if free > 4 else 2) == expected


def test_the_policy_follows_a_competitor_that_starts_and_stops(monkeypatch):
    """Samples as /proc/stat would give them on 2 cores: idle, then another process using one core
    while this one runs one thread, then idle again."""
    samples = iter([CpuSample(0.0, 0.0, 0.0), CpuSample(0.25, 0.01, 0.0),  # start: idle
                    CpuSample(10.0, 15.0, 9.0),  # this process 9 s on 2 threads, others 6 s: 0.6 core
                    CpuSample(20.0, 35.0, 19.0),  # 1 thread (10 s), others 10 s: a whole core
                    CpuSample(30.0, 45.0, 29.0)])  # the other process stopped
    monkeypatch.setattr(threads, "cpu_sample", lambda cpus: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    monkeypatch.setattr(threads.time, "monotonic", lambda: 1e9)  # every adjust() re-measures
    policy = ThreadPolicy()
    policy.cpus = [0, 1]
    assert policy.start() == 2 and torch.get_num_threads() == 2
    policy.adjust()
    assert torch.get_num_threads() == 1
    policy.adjust()
    assert torch.get_num_threads() == 1
    policy.adjust()
    assert torch.get_num_threads() == 2 and policy.history == [2, 1, 2]


def test_the_policy_waits_interval_s_between_measurements(monkeypatch):
    calls = []
    monkeypatch.setattr(threads, "cpu_sample", lambda cpus: calls.append(1) or CpuSample(threads.time.monotonic(), 0, 0))
    policy = ThreadPolicy(interval_s=3600)
    policy.start(sample_s=0.0)
    policy.adjust()
    assert len(calls) == 2  # the start's two samples, no re-measure within the hour


def test_fit_with_num_threads_keeps_it_and_without_chooses(tmp_path, monkeypatch):
    from test_rrn import recipe

    from rrnx.run import fit
    from rrnx.training import CpuThreads

    started = []
    monkeypatch.setattr(CpuThreads, "on_fit_start", lambda self, trainer, model: started.append(1))
    fit(recipe(tmp_path, epochs=1), tmp_path / "fixed", quiet=True)  # the recipe sets num_threads: 1
    assert started == [] and torch.get_num_threads() == 1
    unset = recipe(tmp_path, epochs=1)
    del unset["trainer"]["num_threads"]
    fit(unset, tmp_path / "chosen", quiet=True)
    assert started == [1]


def test_the_cli_asks_for_passive_waits_before_torch_loads():
    """libgomp reads OMP_WAIT_POLICY once, when `import torch` loads it: the rrnx command must set it
    before any of its modules imports torch (a user's own setting wins)."""
    import os
    import subprocess
    import sys

    probe = ("import sys, rrnx.cli, os\n"
             "parser, _ = rrnx.cli.build_parser()\n"
             "assert 'torch' not in sys.modules, 'the CLI imports torch before main() runs'\n"
             "rrnx.cli.main([])\n"
             "print(os.environ['OMP_WAIT_POLICY'])\n")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "ACTIVE"
