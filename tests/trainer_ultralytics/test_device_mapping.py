"""What each trainer hands its framework for a job of num_gpus 1, 2, 4 on one worker (issue 27):
every GPU the job reserves is used. Pure logic (no GPU here): the ranks come from the platform's
layout (ray_app/jobs/ranks.py) and the trainers' own manifests; each rank's DEVICE is what the
runner gives its process (the GPUs Ray made visible to it, numbered within CUDA_VISIBLE_DEVICES:
ray_app/runtime/runner.py); the trainers' mapping functions are called with CUDA's answer given.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from ray_app.jobs.ranks import layout
from ray_app.runtime.registry import TrainerRegistry

TRAINERS = Path(__file__).resolve().parents[2] / "trainers"
for folder in (TRAINERS / "ultralytics", TRAINERS / "timm", TRAINERS):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import timm_common  # noqa: E402  (torch only; timm is imported inside its functions)
import ul_runtime  # noqa: E402  (nothing of ultralytics at import)


def device_of(num_gpus: float) -> str:
    """DEVICE of a rank holding ``num_gpus`` GPUs, as the runner sets it."""
    return ",".join(str(i) for i in range(int(num_gpus))) if num_gpus else "cpu"


@pytest.fixture(scope="module")
def manifests():
    registry = TrainerRegistry([TRAINERS])
    return {name: registry.get(name) for name in ("ultralytics", "timm")}


@pytest.mark.parametrize(("num_gpus", "expected"), [(1, "0"), (2, "0,1"), (4, "0,1,2,3")])
def test_ultralytics_gets_every_gpu_in_one_process(manifests, num_gpus, expected):
    ranks = layout("ultralytics", manifests["ultralytics"].distributed, workers=1, num_gpus=num_gpus,
                   num_cpus=4, memory_mb=None).ranks
    assert len(ranks) == 1 and ranks[0].num_gpus == num_gpus  # one process: Ultralytics' own DDP inside
    device = device_of(ranks[0].num_gpus)
    assert device == expected
    assert ul_runtime.ultralytics_device(device, cuda_count=num_gpus) == expected  # device="0,1,2,3"


@pytest.mark.parametrize("num_gpus", [1, 2, 4])
def test_timm_gets_one_rank_per_gpu_each_on_its_own_cuda_0(manifests, num_gpus):
    ranks = layout("timm", manifests["timm"].distributed, workers=1, num_gpus=num_gpus, num_cpus=4,
                   memory_mb=None).ranks
    assert [r.rank for r in ranks] == list(range(num_gpus))  # WORLD_SIZE = num_gpus
    assert all(r.num_gpus == 1 for r in ranks)
    for rank in ranks:
        # each rank sees its own GPU as "0": cuda:0 of its own CUDA_VISIBLE_DEVICES, never LOCAL_RANK
        assert device_of(rank.num_gpus) == "0"
        assert timm_common.torch_device(device_of(rank.num_gpus), cuda_available=True) == torch.device("cuda", 0)


def test_cpu_and_what_cuda_does_not_see():
    assert ul_runtime.ultralytics_device("cpu", cuda_count=4) == "cpu"
    assert ul_runtime.ultralytics_device("0,1", cuda_count=0) == "cpu"  # no CUDA: the CPU, not a crash
    assert ul_runtime.ultralytics_device("0,1,2,3", cuda_count=2) == "0,1"  # only what CUDA sees
    assert ul_runtime.ultralytics_device("cuda:0", cuda_count=1) == "0"
    assert timm_common.torch_device("cpu", cuda_available=True) == torch.device("cpu")
    assert timm_common.torch_device("0", cuda_available=False) == torch.device("cpu")
    assert timm_common.torch_device("0,1", cuda_available=True) == torch.device("cuda", 0)  # one GPU a process
