"""A lost runner's reason reads as one sentence (issue 13, item 12): the explanation of Ray's
death causes, as the GCS gives them (pure logic; the platform test is in test_runtime_faults)."""

from __future__ import annotations

from ray.core.generated import common_pb2

from ray_app.runtime.deaths import explain

NODE = "ce38bc3a700ace5f4ac4e7b6b33269dc744c63356e4ea60e8938eadd"
WORKER_DIED_TEXT = (
    "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit "
    "detail: Worker unexpectedly exits with a connection error code 2. End of file. Some common causes "
    "include: (1) the process was killed by the OOM killer due to high memory usage, (2) ray stop --force "
    "was called, or (3) the worker crashed unexpectedly due to SIGSEGV or another unexpected error. If the "
    "process was killed by the kernel OOM killer (verifiable by checking for OOM in dmesg of the OOMing "
    "node), consider enabling resource isolation via --enable-resource-isolation to prevent node deaths by "
    "resource contention and significant loss of progress by uninformed kernel OOM killing.")
RAW = ("The actor died unexpectedly before finishing this task. class_name: TrainerRunner actor_id: 89 "
       f"pid: 29140 name: trainer:job-x:attempt-1 namespace: vtp ip: 10.0.0.7 {WORKER_DIED_TEXT}")


def cause(reason: str, message: str, node_death: str | None = None) -> common_pb2.ActorDeathCause:
    ctx = common_pb2.ActorDiedErrorContext(error_message=message, node_ip_address="10.0.0.7", pid=29140,
                                           reason=common_pb2.ActorDiedErrorContext.Reason.Value(reason))
    if node_death:
        ctx.node_death_info.CopyFrom(common_pb2.NodeDeathInfo(reason=2, reason_message=node_death))
    return common_pb2.ActorDeathCause(actor_died_error_context=ctx)


def test_a_dead_worker_is_one_sentence_without_the_oom_boilerplate():
    death = explain(RAW, cause("WORKER_DIED", WORKER_DIED_TEXT), NODE, {"Alive": True})
    assert death.reason == ("the runner's worker process (pid 29140) on node 10.0.0.7 (ce38bc3a700a) died "
                            "unexpectedly (killed by a signal or crashed; Ray saw only its connection close)")
    assert death.retryable and not death.node_lost and death.raw == RAW


def test_a_lost_node_is_named_with_why_ray_declared_it_dead():
    message = f"The actor died because its node has died. Node Id: {NODE}"
    death = explain(message, cause("NODE_DIED", message, "health check failed due to missing too many heartbeats"),
                    NODE, {"Alive": False, "NodeManagerAddress": "10.0.0.7",
                           "DeathReasonMessage": "health check failed due to missing too many heartbeats"})
    assert death.reason == ("node 10.0.0.7 (ce38bc3a700a) was lost (health check failed due to missing too "
                            "many heartbeats); the runner and its trainer went with it")
    assert death.node_lost and death.retryable


def test_ray_kill_and_start_failures_and_unknown_text():
    killed = explain("The actor was killed by ray.kill", cause("RAY_KILL", "killed by ray.kill"), NODE)
    assert killed.reason.startswith("the runner actor was killed with ray.kill on node 10.0.0.7")
    broken = common_pb2.ActorDeathCause(runtime_env_failed_context=common_pb2.RuntimeEnvFailedContext(
        error_message="pip install failed: no such package. More text follows."))
    env = explain("raw", broken, NODE)
    assert env.reason.endswith("pip install failed: no such package.") and not env.retryable
    unknown = explain("Something odd. " + "x" * 900, None, None)
    assert unknown.reason == "the runner on its node is gone: Something odd." and unknown.retryable
