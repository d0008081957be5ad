"""TrainerRunner: the actor that owns one attempt's trainer process (like Ray's JobSupervisor).

It holds the job's resources (num_cpus/num_gpus/memory), starts the trainer as a child in its own
process group with unbuffered output, streams every line to its own log (the Ray dashboard shows
it under the actor's name) and to the job's log in the store, and on request ends the whole
process group: SIGTERM, a grace period, SIGKILL, until no process of the group is left. The child
gets SIGKILL from the kernel if this actor's process dies (PR_SET_PDEATHSIG); the controller also
kills the group by pgid on the node when it sees the actor gone.

The trainer's environment is either the actor's own runtime_env, which the child inherits, or,
when the controller started the runner without it (process_env.py: Ray then starts a plain
worker, or hands it an idle one), a spec the runner unpacks on its node in ``ready()`` and starts
the child with: working directory, PYTHONPATH, variables and interpreter.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import importlib.machinery
import logging
import os
import signal
import socket
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_app.config import Settings
from ray_app.runtime import process_env
from ray_app.store.client import StoreClient

log = logging.getLogger("ray_app.controller")

LOG_FLUSH_S = 0.5
PLATFORM_ONLY_ENV = frozenset({"VTP_JWT_SECRET", "VTP_API_TOKENS", "VTP_DATABASE_URL"})
# what only the rank that reports for the job is given (DESIGN §12)
RANK0_ONLY_ENV = frozenset({"CALLBACK_TOKEN", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI"})
LOG_BATCH = 200
OUTPUT_DRAIN_S = 2.0  # how long the output of a trainer that exited is read before its group is ended
# the trainer's start, held until the runner opens the gate (a line on stdin; at EOF, the runner
# is gone, and nothing starts): `sh -c GATED_EXEC <python> <entrypoint>`; its stdin is then
# /dev/null, as a trainer's always was
GATED_EXEC = 'read -r _ && exec "$0" -u "$1" </dev/null'


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _process_started_at() -> float | None:
    """When this process was spawned (epoch seconds, ~10 ms), from /proc: its start in clock
    ticks since boot, against the uptime now (/proc/stat's btime has a 1 s resolution)."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _node_address(node_id: str) -> str:
    """The address this node is known by in the cluster (what `ray start --node-ip-address`
    gave), where the other ranks reach this one; not a guess from the machine's routes."""
    try:
        return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)
    except (StopIteration, KeyError):
        return ray.util.get_node_ip_address()


def _free_port(host: str) -> int:
    """A port free on this node now (the trainer of rank 0 binds it moments later: torch's
    rendezvous store; a port taken meanwhile fails the attempt, which is retried)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


@ray.remote(max_restarts=0, max_concurrency=8)  # type: ignore[call-overload]  # Ray's typed overloads lack actor options (max_concurrency)
class TrainerRunner:
    def __init__(self, settings: Settings, job_id: str, attempt: int, trace_id: str,
                 entrypoint: str, secret_env: dict[str, str], process_spec: dict[str, Any] | None = None,
                 store: Any = None, rank: int = 0):
        # where an attempt's start-up time goes (reported in its `trainer_process` event): the
        # worker process spawned (with a runtime_env, or without: then possibly before the job,
        # an idle worker Ray hands over), Ray and this module imported, the trainer's packages
        # ready, run() called
        self.startup = {"worker_process_at": _process_started_at(), "runner_init_at": time.time()}
        # the controller's Settings (no VTP_* parsed here) and its handle of the store: the trainer
        # waits at its gate for the first store call, which need not look the store up first
        self.store = StoreClient(settings, known=store)
        self.job_id, self.attempt, self.trace_id = job_id, attempt, trace_id
        self.entrypoint = entrypoint
        # one rank of a gang (runtime/gang.py): only rank 0 speaks for the job, so the other
        # ranks' trainers get no callback token and no MLflow (sdk.distributed)
        self.rank = rank
        self.secret_env = secret_env if rank == 0 else {k: v for k, v in secret_env.items() if k not in RANK0_ONLY_ENV}
        # the trainer's environment, when the runner was started without it (process_env.py)
        self.process_spec = process_spec
        self._process_env: asyncio.Task | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.pgid: int | None = None
        self.started_at: float | None = None
        self._run_task: asyncio.Task | None = None
        self._pending_logs: list[tuple[str, str]] = []
        self._terminating = False  # once asked to end, never start the trainer

    def _say(self, message: str) -> None:
        who = f"RUNNER rank {self.rank}" if self.rank else "RUNNER"
        print(f"[TRACE:{self.trace_id}] [{who}] {message}", flush=True)

    def _note(self, message: str) -> None:
        """A line for the job's log (and this actor's)."""
        self._say(message)
        who = f"RUNNER rank {self.rank}" if self.rank else "RUNNER"
        self._pending_logs.append(("runner", f"[TRACE:{self.trace_id}] [{who}] {message}"))

    async def ready(self, want_port: bool = False) -> dict[str, Any]:
        """Answers once the actor is placed and the trainer's environment is built (its
        runtime_env, or the process spec's packages unpacked on this node). `want_port`: rank 0
        of a gang also names a free port on its node, where the ranks meet (torch.distributed)."""
        trainer = await self._trainer_env()
        self.startup["ready_at"] = time.time()
        ctx = ray.get_runtime_context()
        node_id = ctx.get_node_id()
        address = await asyncio.to_thread(_node_address, node_id)
        info: dict[str, Any] = {"pid": os.getpid(), "node_id": node_id, "gpu_ids": ray.get_gpu_ids(),
                                "python": trainer.python, "node_ip": address}
        if want_port:
            info["port"] = _free_port(address)
        return info

    async def _trainer_env(self) -> process_env.TrainerProcessEnv:
        if self.process_spec is None:  # the actor's runtime_env is the trainer's: inherit it
            return process_env.TrainerProcessEnv()
        if self._process_env is None:
            self._process_env = asyncio.create_task(process_env.materialize(
                self.process_spec, say=functools.partial(self.store.add_news, self.job_id)))
            self._process_env.add_done_callback(
                lambda _: self.startup.setdefault("packages_ready_at", time.time()))
        return await asyncio.shield(self._process_env)

    async def run(self, rank_env: dict[str, str] | None = None) -> dict[str, Any]:
        """Start the trainer (once) and wait for it; calling again re-attaches to the same run.
        `rank_env`: this rank's rendezvous variables (runtime/gang.py), for the first call."""
        if self._run_task is None:
            self.startup["run_called_at"] = time.time()
            self._run_task = asyncio.create_task(self._run(rank_env or {}))
        return await asyncio.shield(self._run_task)

    async def _run(self, rank_env: dict[str, str]) -> dict[str, Any]:
        if self._terminating:
            return {"returncode": -signal.SIGTERM, "signal": "SIGTERM", "pid": None, "pgid": None,
                    "duration_s": 0.0, "not_started": True}
        trainer = await self._trainer_env()
        # the platform's own secrets stay in the runner: a trainer holding the JWT secret could
        # forge other jobs' callback tokens, and the API tokens or the database URL are not its own
        inherited = {k: v for k, v in os.environ.items() if k not in PLATFORM_ONLY_ENV}
        env = {**inherited, **trainer.env, **self.secret_env, **rank_env}
        if self.rank:
            for name in RANK0_ONLY_ENV:
                env.pop(name, None)
        gpu_ids = ray.get_gpu_ids()
        env["DEVICE"] = ",".join(str(i) for i in range(len(gpu_ids))) if gpu_ids else "cpu"
        env["PYTHONUNBUFFERED"] = "1"
        # the SDK shipped by runtime_env.py_modules, for the trainer's `import sdk`: found, not
        # imported (importing it here would cost the attempt boto3's import time, ~0.3-0.5 s).
        # On sys.path only: the platform's own install maps `sdk` to the repository's copy too
        spec = importlib.machinery.PathFinder.find_spec("sdk")
        if spec is not None and spec.origin:
            root = os.path.dirname(os.path.dirname(spec.origin))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        os.makedirs(env.get("WORK_DIR", "."), exist_ok=True)
        self.started_at = time.monotonic()
        # The child waits at a gate (a line on its stdin) until its process is on record, then
        # becomes the trainer (exec: the same pid and group). Started ungated, the trainer's first
        # callbacks were stored before the runner's `trainer_process` event, and the job's
        # timeline showed the process talking before it started.
        self.proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", GATED_EXEC, trainer.python, self.entrypoint, cwd=trainer.cwd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.PIPE,
            env=env, start_new_session=True, preexec_fn=_die_with_parent,
            limit=1 << 20,
        )
        self.pgid = self.proc.pid  # start_new_session: the child leads its own process group
        self.startup["trainer_spawned_at"] = time.time()
        self._say(f"started {self.entrypoint} pid={self.proc.pid} gpus={gpu_ids or 'none'}")
        # where the process runs, on the attempt's row, so the controller can end it even if this
        # actor dies; the job's event tells the user where it runs and how long starting took
        node_id = ray.get_runtime_context().get_node_id()
        try:
            await self.store.attempt_started(self.job_id, self.attempt, node_id, self.proc.pid, self.pgid,
                                             {"gpu_ids": gpu_ids, "python": trainer.python, "startup": self.startup,
                                              "world_size": int(rank_env.get("WORLD_SIZE", "1"))}, rank=self.rank)
        except BaseException:
            kill_group(self.pgid)  # not on record: the controller could not end it
            raise
        await self._open_gate()
        flusher = asyncio.create_task(self._flush_logs_forever())
        reader = asyncio.create_task(self._read_output())
        try:
            returncode = await self.proc.wait()
            # the trainer is gone; a process it started may still hold its output open (and would
            # keep this attempt from ending): what it writes meanwhile is read, then it goes too
            try:
                await asyncio.wait_for(asyncio.shield(reader), OUTPUT_DRAIN_S)
            except TimeoutError:
                self._note(f"the trainer exited; its process group still held its output after {OUTPUT_DRAIN_S:g}s: ended")
                kill_group(self.pgid)
                await reader
        finally:
            flusher.cancel()
            reader.cancel()  # done by now, unless this run itself was cancelled
            # the trainer may have left children behind in its group: they go with it
            if self.pgid is not None and group_alive(self.pgid):
                kill_group(self.pgid)
        outcome: dict[str, Any] = {"returncode": returncode, "pid": self.proc.pid, "pgid": self.pgid,
                   "duration_s": round(time.monotonic() - self.started_at, 3)}
        if returncode < 0:
            outcome["signal"] = signal.Signals(-returncode).name
        self._say(f"trainer exited: {outcome}")
        self._note(f"trainer exited with code {returncode}")
        await self._flush_logs(final=True)
        return outcome

    async def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            print(line, flush=True)  # the actor's log: the Ray dashboard shows it
            self._pending_logs.append(("stdout", line))
            if len(self._pending_logs) >= LOG_BATCH:
                await self._flush_logs()

    async def _open_gate(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"go\n")
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # already ended (terminated meanwhile): its exit is read below as any other

    async def _flush_logs_forever(self) -> None:
        while True:
            await asyncio.sleep(LOG_FLUSH_S)
            await self._flush_logs()

    async def _flush_logs(self, final: bool = False) -> None:
        """`final`: the trainer has exited and these are its last lines (the store records that
        the attempt's output is complete)."""
        if not self._pending_logs and not final:
            return
        batch, self._pending_logs = self._pending_logs, []
        try:
            # the attempt's output is complete with rank 0's last line: the one that reports for the job
            await self.store.append_logs(self.job_id, self.attempt, batch, final=final and self.rank == 0,
                                         rank=self.rank)
        except Exception as exc:  # a log line is not worth killing the training for
            self._say(f"could not store {len(batch)} log lines: {type(exc).__name__}: {exc}")

    async def status(self) -> dict[str, Any]:
        return {"pid": self.proc.pid if self.proc else None, "pgid": self.pgid,
                "running": self.proc is not None and self.proc.returncode is None}

    async def terminate(self, grace_s: float) -> dict[str, Any]:
        """SIGTERM the process group, wait `grace_s`, then SIGKILL; returns once none is left."""
        self._terminating = True
        if self.pgid is None:
            if self._run_task is not None:  # spawning right now: wait for the process to exist
                for _ in range(100):
                    if self.pgid is not None or self._run_task.done():
                        break
                    await asyncio.sleep(0.05)
            if self.pgid is None:
                return {"alive": False, "signalled": None}
        signalled = None
        if group_alive(self.pgid):
            self._note(f"terminating process group {self.pgid} (SIGTERM, then SIGKILL after {grace_s:g}s)")
            kill_group(self.pgid, signal.SIGTERM)
            signalled = "SIGTERM"
            deadline = time.monotonic() + grace_s
            while group_alive(self.pgid) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        while group_alive(self.pgid):
            kill_group(self.pgid, signal.SIGKILL)
            signalled = "SIGKILL"
            await asyncio.sleep(0.05)
        if self.proc is not None and self.proc.returncode is None:
            await self.proc.wait()
        return {"alive": False, "signalled": signalled}


@ray.remote(num_cpus=0)
def kill_process_group(pgid: int) -> bool:
    """Run on the runner's node after the runner actor died: end what it left behind."""
    if not group_alive(pgid):
        return False
    kill_group(pgid)
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


async def kill_orphaned_group(store: StoreClient, job_id: str, attempt: int, trace_id: str) -> None:
    """The runners are gone: end their trainers' process groups on their nodes, if any is left
    (each runner recorded where its process runs on the attempt's row: every rank of a gang).
    A lost node took its processes with it: the task then finds no node, and there is nothing
    to do."""
    try:
        data = await store.attempt_process(job_id, attempt)
    except Exception:
        return
    if data is None:
        return
    for rank in data.get("ranks") or [data]:
        if rank.get("node_id") is None or rank.get("pgid") is None:
            continue
        try:
            await kill_process_group.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(rank["node_id"], soft=False),
            ).remote(int(rank["pgid"]))
        except Exception as exc:
            log.warning("[TRACE:%s] could not clean up process group %s: %s", trace_id, rank, exc)
