"""sdk.distributed: the helpers a data-parallel trainer needs, over a real Gloo process group of
two processes on loopback, and the classification of a lost peer (issue 27)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ray_app.ports import free_port
from sdk import distributed as dist
from sdk.errors import ConfigError, ErrorType, error_type_of, is_peer_loss
from tests.fixtures.s3 import TRAINERS_DIR

RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")


def rank_env(rank: int, world: int, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
               NODE_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), PYTHONPATH=str(TRAINERS_DIR),
               VTP_DIST_TIMEOUT_S="20")
    env.update(extra)
    return env


def run_ranks(script: str, world: int = 2, timeout: float = 120, **extra: str) -> list[subprocess.CompletedProcess]:
    """``script`` as ``world`` processes of one gang; their results in rank order."""
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=rank_env(r, world, port, **extra),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


# ----------------------------------------------------------------------------- the environment
def test_defaults_are_one_process(monkeypatch):
    for name in RANK_VARS:
        monkeypatch.delenv(name, raising=False)
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.node_rank()) == (0, 1, 0, 0)
    assert dist.is_main() and not dist.is_distributed() and not dist.active()
    assert dist.init("cpu") is False  # nothing to join
    # every helper is the identity for one process
    assert dist.all_reduce_mean({"a": 2.0}) == {"a": 2.0} and dist.weighted_mean({"a": 3.0}, 4) == {"a": 3.0}
    assert dist.any_rank(True) is True and dist.any_rank(False) is False
    assert dist.save_on_main(lambda: "saved") == "saved"
    dist.barrier()
    dist.shutdown()


def test_rank_variables_are_read(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("NODE_RANK", "1")
    assert (dist.rank(), dist.world_size(), dist.local_rank(), dist.node_rank()) == (3, 4, 1, 1)
    assert not dist.is_main() and dist.is_distributed()
    assert (dist.backend_for("cuda"), dist.backend_for("cpu")) == ("nccl", "gloo")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x'"):
        dist.rank()
    monkeypatch.setenv("RANK", "4")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "1")
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        dist.init("cpu")


def test_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(dist.TIMEOUT_ENV, raising=False)
    assert dist.timeout_s() == 300.0
    monkeypatch.setenv(dist.TIMEOUT_ENV, "12.5")
    assert dist.timeout_s() == 12.5


def test_importing_the_sdk_does_not_import_torch():
    code = "import sys, sdk; from sdk import distributed; sdk.distributed.rank(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(TRAINERS_DIR)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_checksum_follows_the_bytes_of_every_tensor():
    import torch

    a = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(7), "b": torch.zeros(2).bfloat16(),
         "meta": "not a tensor"}
    same = {"n": torch.tensor(7), "b": torch.zeros(2).bfloat16(), "w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    assert dist.state_checksum(a) == dist.state_checksum(same)  # key order and non-tensors do not count
    changed = dict(same, w=same["w"].clone())
    changed["w"][1, 2] = torch.nextafter(changed["w"][1, 2], torch.tensor(100.0))  # one ulp
    assert dist.state_checksum(changed) != dist.state_checksum(same)
    assert dist.state_checksum({"w": same["w"].reshape(3, 2)}) != dist.state_checksum({"w": same["w"]})


# ----------------------------------------------------------------------------- a real gang of two
COLLECTIVES = """
    import json, torch
    from sdk import distributed as dist

    assert dist.init("cpu") is True and dist.active()
    r = dist.rank()
    out = {"rank": r}
    out["sum"] = dist.all_reduce_sum({"n": 10 * (r + 1), "loss": 0.5 + r})
    out["mean"] = dist.all_reduce_mean({"loss": 1.0 + 2 * r})
    out["cm"] = dist.all_reduce_tensor(torch.tensor([[r, 1], [0, 2 * r]])).tolist()
    out["weighted"] = dist.weighted_mean({"loss": 1.0 if r == 0 else 4.0}, weight=30 if r == 0 else 10)
    out["any_one"] = dist.any_rank(r == 1)
    out["any_none"] = dist.any_rank(False)
    out["saved"] = dist.save_on_main(lambda: f"saved by {dist.rank()}")
    bn = torch.nn.BatchNorm1d(3)
    bn.train()(torch.randn(8, 3) + r)  # each rank's running statistics from its own batch
    before = dist.state_checksum(bn.state_dict())
    dist.broadcast_buffers(bn)
    out["bn"] = [before, dist.state_checksum(bn.state_dict())]
    try:
        dist.save_on_main(lambda: 1 / 0)  # rank 0 fails: every rank learns it, none hangs
    except Exception as exc:
        out["failed_save"] = type(exc).__name__
    dist.barrier()
    dist.shutdown()
    print(json.dumps(out))
"""


def test_collectives_agree_across_two_ranks():
    results = run_ranks(COLLECTIVES)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-2000:] for r in results]
    outs = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    for out in outs:
        assert out["sum"] == {"n": 30.0, "loss": 2.0}
        assert out["mean"] == {"loss": 2.0}
        assert out["cm"] == [[1, 2], [0, 2]]
        assert out["weighted"] == {"loss": pytest.approx((30 * 1.0 + 10 * 4.0) / 40)}
        assert (out["any_one"], out["any_none"]) == (True, False)
    assert [o["saved"] for o in outs] == ["saved by 0", None]  # rank 0 saved, rank 1 waited
    assert outs[0]["bn"][0] != outs[1]["bn"][0]  # the ranks' running statistics differed
    assert outs[0]["bn"][1] == outs[1]["bn"][1] == outs[0]["bn"][0]  # rank 0's, everywhere
    assert [o["failed_save"] for o in outs] == ["ZeroDivisionError", "MainRankFailed"]


# rank 1 dies in the middle of training; rank 0's next collective fails: INFRASTRUCTURE_ERROR,
# so the platform retries the gang instead of failing the job for a FRAMEWORK_ERROR
PEER_LOST = """
    import os, time, torch
    from sdk import distributed as dist
    from sdk.errors import ErrorType, error_type_of

    dist.init("cpu")
    t = torch.ones(1000)
    try:
        for step in range(100000):
            torch.distributed.all_reduce(t)
            if dist.any_rank(False) or (dist.rank() == 1 and step == 20):
                if os.environ["HOW"] == "exit":
                    os._exit(9)  # the process gone (SIGKILL, a lost node): its sockets close
                time.sleep(3600)  # the process hangs: rank 0 waits VTP_DIST_TIMEOUT_S
    except Exception as exc:
        print(type(exc).__name__, "|", error_type_of(exc, default=ErrorType.FRAMEWORK_ERROR).value, flush=True)
"""


@pytest.mark.parametrize("how", ["exit", "hang"])
def test_a_lost_peer_is_an_infrastructure_error(how):
    port = free_port()
    rank0 = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PEER_LOST)],
                             env=rank_env(0, 2, port, HOW=how, VTP_DIST_TIMEOUT_S="4"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rank1 = subprocess.Popen([sys.executable, "-c", textwrap.dedent(PEER_LOST)],
                             env=rank_env(1, 2, port, HOW=how, VTP_DIST_TIMEOUT_S="4"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stdout, stderr = rank0.communicate(timeout=90)
    finally:
        rank1.kill()
        rank1.wait()
        rank0.kill()
    name, _, etype = stdout.strip().splitlines()[-1].partition(" | ")
    assert etype == "INFRASTRUCTURE_ERROR", (stdout, stderr[-2000:])


def test_a_rendezvous_without_its_peer_is_an_infrastructure_error():
    """Rank 0 alone: the store waits for the other rank until the timeout (DistStoreError)."""
    code = """
        from sdk import distributed as dist
        from sdk.errors import error_type_of
        try:
            dist.init("cpu")
        except Exception as exc:
            print(type(exc).__name__, "|", error_type_of(exc).value)
    """
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=90,
                         env=rank_env(0, 2, free_port(), VTP_DIST_TIMEOUT_S="2"))
    assert out.stdout.strip().splitlines()[-1] == "DistStoreError | INFRASTRUCTURE_ERROR", (out.stdout, out.stderr[-2000:])


class DistBackendError(RuntimeError):  # torch.distributed.DistBackendError, by name and module
    pass


DistBackendError.__module__ = "torch.distributed"


@pytest.mark.parametrize(("exc", "lost"), [
    (RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error [10.0.0.2]:4123: "
                  "Connection reset by peer"), True),
    (RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:598] Connection closed by peer [10.0.0.2]:50"), True),
    (RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 300000ms "
                  "for recv operation to complete"), True),
    (DistBackendError("NCCL communicator was aborted on rank 0."), True),
    (RuntimeError("Given groups=1, weight of size [8, 3, 3, 3], expected input[2, 4, 32, 32]"), False),
    (ValueError("connection reset by peer"), False),  # not torch's kind of error
])
def test_peer_loss_by_class_and_text(exc, lost):
    assert is_peer_loss(exc) is lost
    expected = ErrorType.INFRASTRUCTURE_ERROR if lost else ErrorType.FRAMEWORK_ERROR
    assert error_type_of(exc, default=ErrorType.FRAMEWORK_ERROR) is expected


def test_the_contract_names_the_variables_the_platform_sets():
    """sdk.contract.RENDEZVOUS_ENV (what trainers read) is what the platform gives each rank."""
    from ray_app.jobs.ranks import rendezvous
    from sdk import contract

    envs = rendezvous(["node-a", "node-a", "node-b"], "10.0.0.1", 29500)
    assert all(set(env) == set(contract.RENDEZVOUS_ENV) for env in envs)
    assert contract.DIST_TIMEOUT_ENV == dist.TIMEOUT_ENV and contract.REPORTING_RANK == 0
