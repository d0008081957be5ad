"""A fake training loop that uses only the SDK, the way a plugin author would."""

import time

from sdk import TrainerSDK, run_main


def main(sdk: TrainerSDK) -> int:
    cfg = sdk.get_basic_config()
    epochs = int(cfg["epochs"])
    sdk.report_started("training", total_epochs=epochs)
    data = sdk.prepare_dataset("imagefolder")
    classes = sorted(p.name for p in (data / "train").iterdir())
    sdk.start_mlflow_run()
    sdk.log_params({"model": sdk.env.model_name, "epochs": epochs, "classes": len(classes)})
    ckpt = sdk.work_dir / "last.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    acc, start = 0.0, 1
    if sdk.env.resume_from:  # a retried attempt continues after the checkpoint's epoch
        done = sdk.download_checkpoint(sdk.env.resume_from, sdk.work_dir / "resume.pt").read_text()
        start = int(done.split()[1]) + 1
        sdk.log("INFO", f"resumed from {sdk.env.resume_from} ({done})")
    for epoch in range(start, epochs + 1):
        if sdk.should_stop:
            return 0
        time.sleep(float(cfg.get("epoch_seconds", 0.2)))
        loss, acc = 1.0 / (epoch + 1), epoch / (epochs + 1)
        sdk.log("INFO", f"epoch {epoch} at {time.monotonic():.3f}")
        sdk.report_progress(epoch, epochs, metrics={"loss": loss, "accuracy": acc})
        sdk.log_metrics({"loss": loss, "accuracy": acc}, step=epoch)
        sdk.report_validation(epoch, {"accuracy": acc}, per_class={c: {"precision": acc} for c in classes})
        ckpt.write_bytes(f"epoch {epoch}".encode())
        sdk.upload_checkpoint(ckpt, "last")
    sdk.log_artifact(ckpt)
    sdk.report_completed({"accuracy": acc}, checkpoints={"last": sdk.upload_checkpoint(ckpt, "last", wait=True)})
    return 0


if __name__ == "__main__":
    run_main(main)
