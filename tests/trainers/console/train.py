"""A short training run, standard library only; CONFIG:

  say            lines printed to stdout (the job's log), before training
  event_message  the message of a `note` event
  metric         the name of an extra metric reported with each heartbeat (default: none)
  class_name     the class the checkpoint predicts (default: square)
  boxes          how many boxes it predicts per image (default 1; more pile up in the top-left corner)
  fail           after training, fail with this message as a DATASET_ERROR (not retried)
  epoch_seconds  seconds per epoch (default 0.2)
  mlflow_run_id  the run id reported with `done` (default: none)
  mlflow         true: a run of its own in MLFLOW_TRACKING_URI (experiment project-<project>),
                 its id reported with `done`
"""

import json
import os
import sys
import time
import urllib.request
import uuid

ENV = os.environ
JOB, ATTEMPT = ENV["JOB_ID"], int(ENV["ATTEMPT"])
BASE = f"{ENV['BACKEND_BASE_URL']}/v1/jobs/{JOB}"
CONFIG = json.loads(ENV.get("CONFIG", "{}"))
EPOCHS = int(ENV["EPOCHS"])


def post(kind, body):
    body = {"event_id": str(uuid.uuid4()), "attempt": ATTEMPT, **body}
    req = urllib.request.Request(f"{BASE}/{kind}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {ENV['CALLBACK_TOKEN']}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def main():
    for line in CONFIG.get("say", []):
        print(line, flush=True)
    post("event", {"event_type": "started", "message": "training started"})
    if CONFIG.get("event_message"):
        post("event", {"event_type": "note", "message": CONFIG["event_message"]})
    lr = float(ENV.get("LEARNING_RATE", "0.01"))
    for epoch in range(1, EPOCHS + 1):
        time.sleep(float(CONFIG.get("epoch_seconds", 0.2)))
        metrics = {"train_loss": round(1.0 / epoch + lr, 6), "mAP50": round(epoch / (EPOCHS + 1), 6), "lr": lr}
        if CONFIG.get("metric"):
            metrics[CONFIG["metric"]] = epoch
        post("heartbeat", {"epoch": epoch, "total_epochs": EPOCHS, "metrics": metrics})
    if CONFIG.get("fail"):
        post("done", {"status": "failed", "error_type": "DATASET_ERROR", "error": CONFIG["fail"]})
        return 1
    checkpoint = os.path.join(ENV.get("WORK_DIR") or os.getcwd(), "console-best.json")
    with open(checkpoint, "w") as f:
        json.dump({"class_name": CONFIG.get("class_name", "square"), "boxes": int(CONFIG.get("boxes", 1))}, f)
    done = {"status": "succeeded", "final_metrics": {"mAP50": EPOCHS / (EPOCHS + 1)},
            "artifacts": {"best": checkpoint}, "training_time_seconds": EPOCHS * 0.2}
    if CONFIG.get("mlflow_run_id"):
        done["mlflow_run_id"] = CONFIG["mlflow_run_id"]
    if CONFIG.get("mlflow"):
        import mlflow  # the platform's environment has it (env: none)

        mlflow.set_tracking_uri(ENV["MLFLOW_TRACKING_URI"])
        mlflow.set_experiment(f"project-{ENV['PROJECT_ID']}")
        with mlflow.start_run(run_name=f"job-{JOB}") as run:
            mlflow.log_metric("mAP50", EPOCHS / (EPOCHS + 1))
        done["mlflow_run_id"] = run.info.run_id
    post("done", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
