"""The layout of a job's ranks (jobs/ranks.py): pure policy, checked without Ray."""

from __future__ import annotations

import pytest

from ray_app.jobs.ranks import Distributed, LayoutError, layout, rendezvous

PER_GPU = Distributed(max_workers=64, gpus_per_process=1)  # timm: one process per GPU
OWN_DDP = Distributed(max_workers=1)  # Ultralytics: one process uses all its worker's GPUs


@pytest.mark.parametrize("gpus,ranks", [(0, 1), (1, 1), (2, 2), (4, 4)])
def test_a_per_gpu_trainer_runs_one_rank_per_gpu_of_its_worker(gpus, ranks):
    got = layout("timm", PER_GPU, 1, gpus, 4, 4096)
    assert got.world_size == ranks and got.per_worker == ranks
    assert [r.num_gpus for r in got.ranks] == [min(1, gpus)] * ranks
    assert sum(r.num_cpus for r in got.ranks) == 4  # the worker's CPUs shared by its ranks
    assert {r.worker for r in got.ranks} == {0}


def test_workers_times_processes_per_worker_numbered_worker_by_worker():
    got = layout("timm", PER_GPU, 3, 2, 2, None, "SPREAD")
    assert got.world_size == 6 and got.strategy == "SPREAD"
    assert [(r.rank, r.worker) for r in got.ranks] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_a_trainer_with_its_own_data_parallelism_runs_one_process_with_every_gpu(gpus):
    got = layout("ultralytics", OWN_DDP, 1, gpus, 2, None)
    assert got.world_size == 1 and got.ranks[0].num_gpus == gpus


@pytest.mark.parametrize("spec,workers,gpus,field,words", [
    (None, 1, 2, "num_gpus", "at most 1 GPU per worker"),  # a single process never idles GPUs
    (None, 2, 0, "workers", "declares no `distributed`"),
    (OWN_DDP, 2, 1, "workers", "at most 1 worker"),
    (PER_GPU, 65, 0, "workers", "at most 64 workers"),
    (PER_GPU, 1, 1.5, "num_gpus", "multiple"),
    (Distributed(max_workers=4, max_gpus_per_worker=8), 1, 16, "num_gpus", "at most 8 GPUs"),
])
def test_what_a_trainer_would_leave_idle_is_refused_naming_the_field(spec, workers, gpus, field, words):
    with pytest.raises(LayoutError) as err:
        layout("x", spec, workers, gpus, 1, None)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_fractional_gpus_of_one_process_are_allowed():
    assert layout("x", None, 1, 0.5, 1, None).ranks[0].num_gpus == 0.5


def test_rendezvous_numbers_nodes_by_first_rank_and_ranks_within_a_node():
    envs = rendezvous(["b", "a", "b", "c"], "10.0.0.2", 29500)
    assert [(e["RANK"], e["NODE_RANK"], e["LOCAL_RANK"], e["LOCAL_WORLD_SIZE"]) for e in envs] == [
        ("0", "0", "0", "2"), ("1", "1", "0", "1"), ("2", "0", "1", "2"), ("3", "2", "0", "1")]
    assert {(e["WORLD_SIZE"], e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs} == {("4", "10.0.0.2", "29500")}
