"""Fake trainer: speaks the callback contract with urllib only; behaviours come from CONFIG.

behaviour:
  succeed          started, one heartbeat per epoch, checkpoint events, done(succeeded); told to
                   stop, it exits (saving the epoch it finished first with CONFIG save_on_stop)
  ignore_cancel    ignores should_continue=false and SIGTERM (and leaves a child process behind)
  silent           started, then never reports again
  stall            heartbeats forever at the same epoch
  config_error     done(failed, CONFIG_ERROR)
  crash_first      attempt 1 kills itself with SIGKILL after epoch 1; later attempts succeed
  exit0            exits 0 without done
  network_error    done(failed, NETWORK_ERROR)
  leave_writer     network_error, leaving behind a child that holds its output open (an hour's sleep)

Every epoch's heartbeat also reports `objective`, a known function of the hyperparameters for the
sweep tests: best (1.0 at the last epoch) at LEARNING_RATE 0.01 and config.x 1, growing linearly
with the epoch, so any epoch ranks the trials as the last one would.

As a gang's rank > 0 (RANK set by the platform), it only says what it was given (its rendezvous
variables, whether it holds a callback token), then lives as long as rank 0 trains and exits 0:
rank 0 alone reports for the job.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

ENV = os.environ
JOB, ATTEMPT, TRACE = ENV["JOB_ID"], int(ENV["ATTEMPT"]), ENV["TRACE_ID"]
BASE = f"{ENV['BACKEND_BASE_URL']}/v1/jobs/{JOB}"
CONFIG = json.loads(ENV.get("CONFIG", "{}"))
BEHAVIOUR = CONFIG.get("behaviour", "succeed")
EPOCHS = int(ENV["EPOCHS"])
EPOCH_S = float(CONFIG.get("epoch_seconds", 0.3))
seq = 0


def say(msg, level="INFO"):
    print(f"[TRACE:{TRACE}] [{level}] {msg}", flush=True)


def post(kind, body):
    global seq
    seq += 1
    body = {"event_id": str(uuid.uuid4()), "attempt": ATTEMPT, "trace_id": TRACE, **body}
    req = urllib.request.Request(f"{BASE}/{kind}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {ENV['CALLBACK_TOKEN']}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return {"http_status": exc.code, **json.loads(exc.read() or b"{}")}


def event(event_type, message="", **data):
    return post("event", {"event_type": event_type, "message": message, "data": data})


def heartbeat(epoch, **metrics):
    return post("heartbeat", {"epoch": epoch, "total_epochs": EPOCHS, "metrics": metrics})


def done(status, **fields):
    return post("done", {"status": status, **fields})


def objective(epoch):
    import math

    quality = 1.0 - (math.log10(float(ENV["LEARNING_RATE"])) + 2) ** 2 / 10 - 0.1 * abs(float(CONFIG.get("x", 1)) - 1)
    return round(quality * epoch / EPOCHS, 6)


def other_rank():
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT")
    given = " ".join(f"{name}={ENV.get(name)}" for name in names)
    say(f"rank {ENV['RANK']} ready: {given} NUM_CPUS={ENV.get('NUM_CPUS')} "
        f"callback_token={'CALLBACK_TOKEN' in ENV} mlflow={'MLFLOW_TRACKING_URI' in ENV}")
    for epoch in range(1, EPOCHS + 1):
        time.sleep(EPOCH_S)
        say(f"rank {ENV['RANK']} epoch {epoch}")
    sys.exit(0)


def main():
    if int(ENV.get("RANK", "0")) > 0:
        other_rank()
    say(f"fake trainer attempt {ATTEMPT} behaviour={BEHAVIOUR} resume_from={ENV.get('RESUME_FROM')}")
    say(f"cwd={os.getcwd()} job={ENV.get('JOB_ID')}")
    event("started", "training started", resume_from=ENV.get("RESUME_FROM"))
    if BEHAVIOUR == "config_error":
        done("failed", error="unknown hyperparameter 'lr0x'", error_type="CONFIG_ERROR")
        return 1
    if BEHAVIOUR in ("network_error", "leave_writer"):
        if BEHAVIOUR == "leave_writer":  # its stdout and stderr are this process's
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
            say(f"left child {child.pid} behind")
        done("failed", error="storage unreachable", error_type="NETWORK_ERROR")
        return 1
    if BEHAVIOUR == "exit0":
        return 0
    if BEHAVIOUR == "ignore_cancel":
        signal.signal(signal.SIGTERM, lambda *_: say("ignoring SIGTERM", "WARNING"))
        child = subprocess.Popen([sys.executable, "-c",
                                  "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"])
        event("child_started", pid=child.pid)
        say(f"child pid {child.pid}")
    if BEHAVIOUR == "silent":
        time.sleep(3600)
    start = 1
    if ENV.get("RESUME_FROM"):
        start = int(ENV["RESUME_FROM"].rsplit("epoch-", 1)[1].split(".")[0]) + 1
    epoch = start
    while epoch <= EPOCHS or BEHAVIOUR in ("stall", "ignore_cancel"):
        time.sleep(EPOCH_S)
        reply = heartbeat(min(epoch, EPOCHS) if BEHAVIOUR != "stall" else 1, loss=1.0 / epoch, accuracy=epoch / (EPOCHS + 1),
                          objective=objective(min(epoch, EPOCHS)))
        if not reply.get("should_continue", True) and BEHAVIOUR != "ignore_cancel":
            say("stop requested: saving and exiting")
            if CONFIG.get("save_on_stop"):  # as a real trainer does: the epoch it finished is kept
                event("checkpoint_saved", f"epoch {epoch} (stopping)", name="last",
                      checkpoint_path=f"s3://bucket/checkpoints/job-{JOB}/epoch-{epoch}.pt")
            return 0
        if BEHAVIOUR in ("stall",):
            continue
        ckpt = f"s3://bucket/checkpoints/job-{JOB}/epoch-{epoch}.pt"
        event("checkpoint_saved", f"epoch {epoch}", checkpoint_path=ckpt, name="last")
        if BEHAVIOUR == "crash_first" and ATTEMPT == 1 and epoch == 1:
            say("crashing on purpose")
            os.kill(os.getpid(), signal.SIGKILL)
        epoch += 1
    done("succeeded", final_metrics={"accuracy": EPOCHS / (EPOCHS + 1)},
         artifacts={"last": f"s3://bucket/checkpoints/job-{JOB}/epoch-{EPOCHS}.pt"},
         training_time_seconds=EPOCHS * EPOCH_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
