"""Per-trainer venvs built by uv against the platform's versions (issue 19), with real builds.

The machines that run this suite have a global pip configuration that caps torch below the
platform's; a venv built by pip there installed a second, 5 GB torch into every trainer venv.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ray_app.runtime import venvs
from ray_app.runtime.registry import TrainerManifest, TrainerRegistry

REPO = Path(__file__).resolve().parents[2]
VENVS = Path.home() / ".cache" / "vtp-test-venvs"  # what the platform fixtures use
LARGE = ("torch", "torchvision", "triton", "opencv-python", "polars", "ray", "nvidia-cublas")
MAX_VENV_MB = 200


def du_mb(path: Path) -> float:
    # disk use of the venv's own files (uv hard-links from its cache: count each file once)
    seen, total = set(), 0
    for file in path.rglob("*"):
        if file.is_file() and not file.is_symlink():
            st = file.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total / 2**20


def own_packages(venv: Path) -> dict[str, str]:
    [purelib] = venv.glob("lib/python3*/site-packages")
    return venvs.installed_versions([str(purelib)])


def manifest_with(tmp_path: Path, requirements: list[str], **fields) -> TrainerManifest:
    folder = tmp_path / "plugin"
    folder.mkdir(exist_ok=True)
    (folder / "requirements.txt").write_text("\n".join(requirements) + "\n")
    return TrainerManifest(name="plugin", task_types=["image_classification"], requirements="requirements.txt",
                           env="venv", folder=folder, **fields)


@pytest.mark.parametrize("name", ["timm", "ultralytics"])
def test_bundled_trainer_venvs_carry_no_torch_and_stay_small(name):
    manifest = TrainerRegistry([REPO / "trainers"]).get(name)
    logged: list[str] = []
    venv = venvs.build(VENVS, manifest, log=logged.append)
    own = own_packages(venv)
    assert name in own, own  # the framework itself is the trainer's own ...
    assert not set(LARGE) & set(own), own  # ... and the large shared base is the platform's
    platform = venvs.platform_versions()
    assert not [p for p in own if p in platform and own[p] != platform[p]], own  # nothing shadows
    assert du_mb(venv) < MAX_VENV_MB, du_mb(venv)
    # the trainer's Python imports the framework from its venv and torch from the platform
    find = "import importlib.util as u; print(*(u.find_spec(m).origin for m in ('torch', 'cv2', %r)))" % name
    out = subprocess.run([str(venvs.python_of(venv)), "-c", find], capture_output=True, text=True, timeout=120,
                         cwd=venv)
    assert out.returncode == 0, out.stderr[-2000:]
    torch_file, cv2_file, framework_file = out.stdout.split()
    assert not Path(torch_file).is_relative_to(venv) and not Path(cv2_file).is_relative_to(venv)
    assert Path(framework_file).is_relative_to(venv)
    # built once: the same call again reuses it at once
    assert venvs.find_built(VENVS, manifest) == venv
    assert venvs.build(VENVS, manifest, log=logged.append) == venv


def test_the_machines_pip_configuration_does_not_reach_the_build(tmp_path, monkeypatch):
    # a constraint that pip would apply (and an index it would fail on): uv, like make install, ignores both
    (tmp_path / "c.txt").write_text("six<1.10\n")
    monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "c.txt"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    manifest = manifest_with(tmp_path, ["six"])
    venv = venvs.build(tmp_path / "venvs", manifest)
    assert "six" not in own_packages(venv)  # the platform's six satisfies it: nothing installed
    assert (venv / ".complete").read_text().strip() == ""


def test_a_requirement_the_platform_cannot_meet_is_logged_and_a_large_copy_refused(tmp_path):
    platform_six = venvs.platform_versions()["six"]
    assert platform_six != "1.16.0"
    manifest = manifest_with(tmp_path, ["six==1.16.0"])
    logged: list[str] = []
    # limit 0 MB: six stands for a large package here (torch itself would be a 3 GB download)
    with pytest.raises(venvs.VenvBuildError) as err:
        venvs.build(tmp_path / "venvs", manifest, log=logged.append, shadow_limit_mb=0)
    message = str(err.value)
    assert "six 1.16.0" in message and f"shadows the platform's six {platform_six}" in message
    assert "shadows: [name]" in message
    assert any("six==1.16.0 shadows the platform's six==" in line and "-r" in line for line in logged), logged
    assert not venvs.venv_dir(tmp_path / "venvs", manifest).exists()  # nothing half-built is left


def test_a_declared_shadow_is_installed_and_wins(tmp_path):
    manifest = manifest_with(tmp_path, ["six==1.16.0"], shadows=["six"])
    venv = venvs.build(tmp_path / "venvs", manifest, shadow_limit_mb=0)
    assert own_packages(venv) == {"six": "1.16.0"}
    out = subprocess.run([str(venvs.python_of(venv)), "-c", "import six; print(six.__version__)"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.stdout.strip() == "1.16.0", out.stderr


def test_the_venv_identity_covers_requirements_shadows_lock_and_interpreter(tmp_path, monkeypatch):
    root = tmp_path / "venvs"
    base = venvs.venv_dir(root, manifest_with(tmp_path, ["six"]))
    assert venvs.venv_dir(root, manifest_with(tmp_path, ["six"])) == base
    assert venvs.venv_dir(root, manifest_with(tmp_path, ["six>=1"])) != base
    assert venvs.venv_dir(root, manifest_with(tmp_path, ["six"], shadows=["six"])) != base
    monkeypatch.setattr(venvs, "_lock_bytes", lambda: b"another lock")
    assert venvs.venv_dir(root, manifest_with(tmp_path, ["six"])) != base
    monkeypatch.undo()
    monkeypatch.setattr(venvs.sys, "executable", "/elsewhere/python")
    assert venvs.venv_dir(root, manifest_with(tmp_path, ["six"])) != base


def test_resolved_lines_parse_into_pins_and_their_reasons():
    parsed = venvs.parse_resolved(
        "# header\nnumpy==2.4.6              # via torch, -c x.txt\n"
        "Foo_Bar[extra]==1.0 ; python_version >= '3'  # via -r r.in\n"
        "mypkg @ https://example.invalid/mypkg-1.0.tar.gz  # via -r r.in\n"
    )
    assert [(r.name, r.version) for r in parsed] == [("numpy", "2.4.6"), ("foo-bar", "1.0"), ("mypkg", None)]
    assert parsed[0].via == "torch, -c x.txt"
