"""The loader's process count comes from the trial's CPUs (resources.cpus_per_trial)."""

from orchestrator.trial.steps import loader_workers


def test_loader_processes_follow_the_cpus():
    assert [loader_workers(n) for n in (1, 2, 4, 8, 16)] == [0, 1, 2, 2, 4]  # CPU: torch threads need cores
    assert [loader_workers(n, gpu=True) for n in (1, 2, 8)] == [0, 1, 7]  # GPU: all but the main process
