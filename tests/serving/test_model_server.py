"""Inference on Ray Serve with multiplexed models (issue 17): many finished jobs served by one
model server per trainer, at most `predict_models_per_replica` models loaded per replica, the
least recently used unloaded and loaded again when asked for; no per-job actors."""

from __future__ import annotations

import io

import pytest
import ray
from ray import serve
from ray.util.state import list_actors

from ray_app.serving.apps import app_name
from tests.serving.test_images import truncated_png

pytestmark = pytest.mark.timeout(400)


def png(width: int = 32, height: int = 24) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, format="PNG")
    return buf.getvalue()


def predict(p, job_id: str) -> dict:
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", ("x.png", png(), "image/png"))], timeout=180)
    assert r.status_code == 200, r.text
    return r.json()


def replica_status() -> dict:
    return serve.get_app_handle(app_name("console")).status.remote().result(timeout_s=30)


def test_six_jobs_share_one_server_that_keeps_two_models(deployment, sqlite_url):
    p = deployment.deploy(sqlite_url, VTP_PREDICT_MODELS_PER_REPLICA="2")
    jobs = [p.create_job(framework="console", model_name="console-serve", project_id="serving", epochs=1,
                         config={"class_name": f"class-{i}", "epoch_seconds": 0.05})["id"] for i in range(6)]
    for job_id in jobs:
        assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"

    answers = {}
    for i, job_id in enumerate(jobs):
        body = predict(p, job_id)
        answers[job_id] = body["predictions"]
        assert body["predictions"][0]["boxes"][0]["class_name"] == f"class-{i}"  # its own model
        assert not body["model_cached"]
        status = replica_status()
        assert len(status["resident"]) <= 2, status
        assert any(r.startswith(f"{job_id}|") for r in status["resident"])  # the one just used
    again = predict(p, jobs[-1])  # still loaded: served from the cache
    assert again["model_cached"] and again["predictions"] == answers[jobs[-1]]

    # the first job's model was evicted long ago: loaded again, the same answer
    first = predict(p, jobs[0])
    assert not first["model_cached"] and first["predictions"] == answers[jobs[0]]
    status = replica_status()
    assert status["loads"][f"{jobs[0]}|{p.job(jobs[0])['artifacts']['best']}"] == 2
    assert len(status["resident"]) <= 2 and any(r.startswith(jobs[0]) for r in status["resident"])

    # no actor per job: only the server's replica (and Serve's own actors)
    names = [a.name or "" for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000,
                                               raise_on_missing_output=False)]
    assert not [n for n in names if n.startswith("predictor")], names
    assert ray.is_initialized()


def test_refusals_name_the_reason(platform):
    p = platform
    running = p.create_job(framework="console", model_name="console-serve", epochs=50,
                           config={"epoch_seconds": 5})["id"]
    r = p.api("POST", f"/v1/jobs/{running}/predict", files=[("files", ("x.png", png(), "image/png"))])
    assert r.status_code == 409 and "SUCCEEDED" in r.json()["detail"]
    p.api("POST", f"/v1/jobs/{running}/cancel")
    manual = p.create_job()["id"]
    p.api("POST", f"/v1/jobs/{manual}/cancel")
    r = p.api("POST", f"/v1/jobs/{manual}/predict", files=[("files", ("x.png", png(), "image/png"))])
    assert r.status_code == 409 and "no predict entrypoint" in r.json()["detail"]


def encoded(fmt: str, width: int = 32, height: int = 24) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_predict_takes_images_never_names_or_paths_and_says_which_file_is_not_one(platform, tmp_path):
    """Issue 31: an upload is data, never a path. A file that is not an image is refused before any
    model is touched (422 naming it and why), whatever its name; an image is an image under any name."""
    from ray_app.client import APIError, Client

    p = platform
    job_id = p.create_job(framework="console", model_name="console-serve", project_id="serving", epochs=1,
                          config={"class_name": "kept", "epoch_seconds": 0.05})["id"]
    assert p.wait_final(job_id, timeout=120)["state"] == "SUCCEEDED"
    on_server = tmp_path / "only-on-the-server.png"  # a file the model server's machine can read
    on_server.write_bytes(png(64, 48))
    listing = f"{on_server}\n".encode()
    hostile = [("paths.txt", listing), ("list.csv", b"path\n" + listing), (f"{tmp_path}/", listing),
               ("*.png", listing), ("../../etc/passwd", b"root:x:0:0\n"), ("empty.png", b""),
               ("truncated.png", truncated_png()), ("anim.gif", encoded("GIF"))]
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", (n, d, "image/png")) for n, d in hostile])
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert [d["loc"] for d in detail] == [["body", "files", i] for i in range(len(hostile))], detail
    for (name, _), d in zip(hostile, detail):
        assert d["msg"].startswith(repr(name)), d
    assert "not an image (JPEG, PNG" in detail[0]["msg"] and "empty file" in detail[5]["msg"]
    assert "not a readable image" in detail[6]["msg"] and "GIF images are not accepted" in detail[7]["msg"]
    # one bad file among good ones refuses the request: nothing was predicted
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", ("ok.png", png(), "image/png")),
                                                            ("files", ("paths.txt", listing, "text/plain"))])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "files", 1], r.text

    # an image under hostile names: predicted as the image it is, its name only echoed back
    names = [f"{tmp_path}/", "*.png", "../../x.txt", "a\\..\\b.csv"]
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", (n, png(40, 20), "image/png")) for n in names])
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [(x["image"], x["width"], x["height"]) for x in predictions] == [(n, 40, 20) for n in names]

    # a prediction that fails inside the model server (this trainer reads PNGs only) is a 5xx
    # naming the job, not an exception class, and the client does not send it again
    r = p.api("POST", f"/v1/jobs/{job_id}/predict", files=[("files", ("photo.jpg", encoded("JPEG"), "image/jpeg"))])
    assert r.status_code == 500 and job_id in r.json()["detail"], r.text
    assert "Error" not in r.json()["detail"], r.text
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(encoded("JPEG"))
    text = tmp_path / "notes.png"
    text.write_bytes(listing)
    sent: list[str] = []
    with Client(p.base_url, p.api_token) as client:
        client.http.event_hooks["request"].append(lambda request: sent.append(request.url.path))
        for path, status in ((text, 422), (photo, 500)):
            sent.clear()
            with pytest.raises(APIError) as refused:
                client.predict(job_id, [path])
            assert refused.value.status == status and len(sent) == 1, (refused.value, sent)
