"""The trainer contract is defined once (trainers/sdk/contract.py) and both sides agree on it: the
SDK's builders make bodies the platform's models accept, the vocabulary and limits are the same
objects on both sides, the heartbeat merge rule is the platform's, and the plugin guide's JSON
Schema is the one the platform validates with. No Ray."""
from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.s3 import TRAINERS_DIR
from sdk import ConfigError, contract, normalize_task_type as sdk_normalize_task_type
from sdk.callbacks import absorb_heartbeat

from ray_app.jobs import api_models, callback_models, contract_schema, types
from ray_app.jobs.api_models import JobCreate
from ray_app.jobs.callback_models import CallbackBatchIn, DoneIn, EventIn, HeartbeatIn
from ray_app.runtime import registry, runtime_env
from ray_app.storage import s3 as platform_s3

REPO = TRAINERS_DIR.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"


# ----------------------------------------------------------------- one module, standard library only
def test_contract_imports_only_the_standard_library():
    tree = ast.parse((TRAINERS_DIR / "sdk" / "contract.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_the_platform_imports_the_contract_without_the_sdks_dependencies(tmp_path):
    """`sdk` is installed with the platform (pyproject's packages): importable from anywhere, and
    `import sdk.contract` loads no boto3, httpx or MLflow; `from sdk import TrainerSDK` still works."""
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    code = ("import sys, sdk.contract, ray_app.jobs.callback_models, ray_app.jobs.api_models\n"
            "heavy = sorted(m for m in ('boto3', 'botocore', 'httpx', 'mlflow') if m in sys.modules)\n"
            "assert not heavy, heavy\n"
            "from sdk import TrainerSDK, ErrorType, run_main\n"
            "assert 'httpx' in sys.modules and TrainerSDK.__module__ == 'sdk.core'\n"
            "print(sdk.contract.__file__)\n")
    out = subprocess.run([python, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"})
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == TRAINERS_DIR / "sdk" / "contract.py"


def test_runtime_env_still_ships_the_sdk_folder_as_the_sdk_py_module():
    assert runtime_env.SDK_DIR == TRAINERS_DIR / "sdk" and (runtime_env.SDK_DIR / "contract.py").is_file()


# ----------------------------------------------------------------- one vocabulary
def test_both_sides_use_the_same_objects():
    assert callback_models.ErrorType is contract.ErrorType
    assert callback_models.EventLevel is contract.EventLevel
    assert api_models.TaskType is contract.TaskType and registry.TaskType is contract.TaskType
    assert callback_models.MAX_CALLBACK_BATCH == contract.MAX_CALLBACK_BATCH
    assert types.MAX_SEQ == contract.MAX_SEQ and types.NON_FINITE == contract.NON_FINITE
    assert platform_s3.parse_s3_uri is contract.parse_s3_uri and platform_s3.format_s3_uri is contract.format_s3_uri
    import sdk
    assert sdk.ErrorType is contract.ErrorType and sdk.EXIT_CALLBACK_FAILURE == contract.EXIT_CALLBACK_FAILURE == 2
    assert sdk.parse_s3_uri is contract.parse_s3_uri


@pytest.mark.parametrize("given,dice", [
    *[(alias, task.value) for alias, task in contract.TASK_ALIASES.items()],
    *[(name, name) for name in contract.TASK_TYPES],
    (" Detect ", "object_detection"), ("CLASSIFY", "image_classification"),
])
def test_task_types_and_aliases_are_accepted_alike_by_the_api_the_sdk_and_manifests(given, dice):
    """Ultralytics' own names (detect, segment, classify) included: the API refused `detect`,
    which the SDK accepted."""
    job = JobCreate(framework="f", task_type=given, model_name="m", dataset_id="d")
    assert job.task_type == dice and job.model_dump(mode="json")["task_type"] == dice
    assert sdk_normalize_task_type(given) == dice == contract.normalize_task_type(given)
    manifest = registry.TrainerManifest(name="t", task_types=[given])
    assert [t.value for t in manifest.task_types] == [dice] and manifest.supports(given, "any")


@pytest.mark.parametrize("bad", ["juggling", "", "object detection", "detections"])
def test_an_unknown_task_type_is_refused_by_both(bad):
    with pytest.raises(ValueError):
        JobCreate(framework="f", task_type=bad, model_name="m", dataset_id="d")
    if bad:
        with pytest.raises(ConfigError, match="TASK_TYPE"):
            sdk_normalize_task_type(bad)


def test_error_types_levels_and_their_aliases():
    assert contract.ErrorType.TRAINING_ERROR is contract.ErrorType.FRAMEWORK_ERROR
    for name in [e.value for e in contract.ErrorType] + ["training_error", "dataset_error"]:
        body = contract.done_body("failed", error="x", error_type=name)
        assert DoneIn.model_validate(body).error_type is contract.ErrorType.coerce(name)
    assert DoneIn.model_validate({"status": "failed", "error_type": "Training_Error"}).error_type == "FRAMEWORK_ERROR"
    with pytest.raises(ValueError):
        DoneIn.model_validate({"status": "failed", "error_type": "NOPE"})
    assert contract.done_body("failed", error_type="NOPE")["error_type"] == "UNKNOWN_ERROR"
    for level, stored in [("WARN", "warning"), ("critical", "error"), ("Debug", "debug"), ("info", "info")]:
        assert EventIn.model_validate({"event_type": "x", "level": level}).level == stored
        assert contract.event_body("x", level=level)["level"] == stored
    assert contract.event_body("x", level="chatty")["level"] == "info"
    with pytest.raises(ValueError):
        EventIn.model_validate({"event_type": "x", "level": "chatty"})


def test_the_models_limits_are_the_contracts():
    props = DoneIn.model_json_schema()["properties"]
    assert props["error"]["anyOf"][0]["maxLength"] == contract.MAX_ERROR
    assert props["traceback"]["anyOf"][0]["maxLength"] == contract.MAX_TRACEBACK
    assert props["event_id"]["anyOf"][0]["maxLength"] == contract.MAX_IDEMPOTENCY_KEY
    ev = EventIn.model_json_schema()["properties"]
    assert ev["message"]["maxLength"] == contract.MAX_MESSAGE
    assert ev["event_type"]["maxLength"] == contract.MAX_EVENT_TYPE
    assert ev["event_type"]["pattern"] == contract.EVENT_TYPE_PATTERN
    batch = CallbackBatchIn.model_json_schema()["properties"]["items"]
    assert batch["maxItems"] == contract.MAX_CALLBACK_BATCH
    hb = HeartbeatIn.model_json_schema()["properties"]
    assert hb["epoch"]["anyOf"][0]["maximum"] == contract.MAX_EPOCH
    assert hb["step"]["anyOf"][0]["maximum"] == contract.MAX_STEP


# ----------------------------------------------------------------- the builders make valid bodies
ENV = {"event_id": "e" * 200, "attempt": 3, "seq": 7, "trace_id": "t" * 100}


class _Scalar:  # a numpy/torch-like scalar
    def __init__(self, v):
        self.v = v

    def item(self):
        return self.v


def test_bodies_built_from_awkward_values_are_accepted_by_the_platform():
    awkward = "bad\x00text\ud800 " * 2000
    metrics = {"loss": float("nan"), "up": float("inf"), "down": -math.inf, "acc": 1, "np": _Scalar(0.5),
               "flag": True, "name": "x", "none": None, "m" * 300: 1.0}
    hb = contract.heartbeat_body(epoch=2, total_epochs=3, step=5, total_steps=10, metrics=metrics, **ENV)
    assert HeartbeatIn.model_validate(hb).metrics["loss"] == "NaN"
    assert hb["metrics"] == {"loss": "NaN", "up": "Infinity", "down": "-Infinity", "acc": 1.0, "np": 0.5,
                             "m" * 127 + "…": 1.0}
    assert hb["progress"] == 50.0 and hb["event_id"] == "e" * 127 + "…" and len(hb["trace_id"]) == 64
    assert contract.heartbeat_body(progress=float("nan"))["progress"] == 0.0
    assert contract.heartbeat_body(progress=250)["progress"] == 100.0

    data = {"path": Path("/tmp/x"), "nan": float("nan"), "tuple": (1, 2), "nested": {"a": {"b": [awkward]}},
            "deep": _nest(40), 3: "int key", "when": datetime(2026, 1, 1, tzinfo=UTC), "np": _Scalar(2)}
    ev = contract.event_body("custom.thing-1", awkward, "warn", data, **ENV)
    parsed = EventIn.model_validate(json.loads(json.dumps(ev)))
    assert parsed.level == "warning" and len(parsed.message) == contract.MAX_MESSAGE
    assert parsed.data["path"] == "/tmp/x" and parsed.data["nan"] == "NaN" and parsed.data["3"] == "int key"
    assert parsed.data["np"] == 2

    done = contract.done_body("failed", error=awkward * 10, error_type="oom?", traceback=awkward * 40,
                              final_metrics=metrics, artifacts={"best": "s3://b/k", "none": None, "x" * 300: "u"},
                              mlflow_run_id="r" * 300, training_time_seconds=float("inf"), **ENV)
    assert "seq" not in done  # done is once per attempt: no seq
    parsed_done = DoneIn.model_validate(json.loads(json.dumps(done)))
    assert parsed_done.error_type == "UNKNOWN_ERROR" and parsed_done.traceback.endswith(awkward[-10:].replace(
        "\x00", "\ufffd").replace("\ud800", "\ufffd"))
    assert set(parsed_done.artifacts) == {"best", "x" * 255 + "…"}
    assert contract.done_body("succeeded", error_type="X")["error_type"] is None
    with pytest.raises(ValueError):
        contract.done_body("finished")

    batch = contract.batch_body([("heartbeat", hb), ("event", ev), ("done", done)])
    assert CallbackBatchIn.model_validate(json.loads(json.dumps(batch))).items[-1].kind == "done"
    with pytest.raises(ValueError):
        contract.batch_body([("done", done), ("event", ev)])
    with pytest.raises(ValueError):
        contract.batch_body([("event", ev)] * (contract.MAX_CALLBACK_BATCH + 1))


def _nest(n: int):
    value: object = "leaf"
    for _ in range(n):
        value = {"k": value}
    return value


@pytest.mark.parametrize("name,fixed", [("Epoch End", "epoch_end"), ("1st", "x_1st"), ("é", "x__"),
                                        ("a" * 100, "a" * 64)])
def test_an_event_type_the_platform_refuses_is_coerced(name, fixed):
    assert not contract.valid_event_type(name)
    assert contract.coerce_event_type(name) == fixed
    EventIn.model_validate(contract.event_body(contract.coerce_event_type(name)))


# ----------------------------------------------------------------- the heartbeat merge rule
_opt_int = st.one_of(st.none(), st.integers(0, 50))


@st.composite
def _heartbeat_pair(draw):
    """Two heartbeats the SDK may merge (contract.merge_heartbeats): of one epoch, or the first
    without metrics; within an epoch steps do not go back; the SDK always sends progress."""
    metrics = st.dictionaries(st.sampled_from(["loss", "acc", "lr"]), st.floats(0, 10), max_size=3)
    epoch = draw(st.integers(1, 20))
    same = draw(st.booleans())
    old = {"epoch": epoch, "total_epochs": draw(st.one_of(st.none(), st.just(20))), "step": draw(_opt_int),
           "total_steps": draw(st.one_of(st.none(), st.just(50))), "progress": draw(st.floats(0, 100)),
           "metrics": draw(metrics) if same else {}}
    new_epoch = epoch if same else draw(st.integers(epoch, 20))
    step = draw(_opt_int)
    if new_epoch == epoch and step is not None and old["step"] is not None:
        step = max(step, old["step"])
    new = {"epoch": new_epoch, "total_epochs": draw(st.one_of(st.none(), st.just(20))), "step": step,
           "total_steps": draw(st.one_of(st.none(), st.just(50))), "progress": draw(st.floats(0, 100)),
           "metrics": draw(metrics)}
    return old, new


@settings(max_examples=300, deadline=None)
@given(_heartbeat_pair())
def test_a_merged_heartbeat_does_to_a_job_what_the_two_do(pair):
    """The SDK's coalescing (contract.merge_heartbeats) against the platform's own rule for a
    heartbeat's effect on the job row (ray_app/store/bulk.py heartbeat_changes)."""
    from ray_app.store.bulk import heartbeat_changes

    old, new = pair
    job = {"epoch": None, "total_epochs": None, "step": None, "total_steps": None, "progress": 0.0,
           "latest_metrics": {}, "last_progress_at": None}
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def apply(row, body):
        return {**row, **heartbeat_changes(row, HeartbeatIn.model_validate(body), now)}

    fields = ("epoch", "total_epochs", "step", "total_steps", "progress", "latest_metrics")
    one_by_one = apply(apply(job, old), new)
    merged = apply(job, absorb_heartbeat(old, new))
    assert {f: merged[f] for f in fields} == {f: one_by_one[f] for f in fields}


# ----------------------------------------------------------------- storage
def test_s3_uris_and_the_key_layout():
    assert contract.parse_s3_uri("s3://b/a/b.pt") == ("b", "a/b.pt")
    assert contract.parse_s3_uri("s3://b") == ("b", "")
    for bad in ("http://b/k", "s3:///k", "b/k"):
        with pytest.raises(ValueError):
            contract.parse_s3_uri(bad)
    assert contract.format_s3_uri("b", "/k") == "s3://b/k"
    assert contract.checkpoint_key("42", "best") == "checkpoints/job-42/best.pt"
    assert contract.checkpoint_key("42", "epoch-3") == "checkpoints/job-42/epoch-3.pt"
    assert contract.checkpoint_key("42", "weights.safetensors") == "checkpoints/job-42/weights.safetensors"
    assert contract.artifact_key("42", "/plots/a.png") == "artifacts/job-42/plots/a.png"
    with pytest.raises(ValueError):
        contract.artifact_key("42", "../escape")
    assert contract.dataset_uri("b", "ds") == "s3://b/datasets/ds"
    assert (contract.dataset_archive_key("ds"), contract.dataset_prefix("ds")) == ("datasets/ds.zip", "datasets/ds/")
    assert contract.callback_path("j1", contract.BATCH) == "/v1/jobs/j1/callbacks"


# ----------------------------------------------------------------- the guide's JSON Schema
def test_the_plugin_guides_json_schema_is_the_platforms():
    readme = contract_schema.README.read_text()
    assert contract_schema.render(readme) == readme, (
        f"trainers/README.md's JSON Schema of the callbacks is out of date: run `{contract_schema.COMMAND}`")
    section = readme.split(contract_schema.BEGIN, 1)[1].split(contract_schema.END, 1)[0]
    doc = json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert {"HeartbeatIn", "EventIn", "DoneIn", "CallbackBatchIn", "HeartbeatReply"} <= set(doc["$defs"])
