"""The pip package (pyproject.toml): the wheel holds the modules detect.py needs and the shipped
model, and its light install (onnxruntime, no PyTorch), in a fresh virtual environment, runs the
`facial-keypoints` command from outside the repository with the same keypoints as `detect.py`.

The light install fetches its dependencies from the package index (about 115 MB of wheels; pip's
cache keeps them for reruns where the index lets it); that test is skipped, saying so, only when the
index cannot be reached."""

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile

import cv2
import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "facial_keypoints"
SHIPPED = ("keypoints_model.pt", "keypoints_model.onnx", "keypoints_model.int8.onnx",
           "face_detection_short_range.onnx", "face_detection_short_range.LICENSE")
# What inference on onnxruntime needs: all that `pip install .` brings.
LIGHT = {"numpy", "opencv-python-headless", "onnxruntime", "pillow", "tqdm"}
# Pins in requirements.txt for the tests and the build only, in neither the package nor [train].
TOOLS = {"pytest", "ruff", "hatchling"}
# --json rounds pixels to 2 decimals: the same computation may land either side of a rounding step.
ATOL_PX = 0.015


def run(command, **kwargs):
    """Run a command; on failure, fail the test with its output."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip install .` builds (hatchling from the dev environment, requirements.txt)."""
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(out), ROOT])
    (path,) = out.glob("*.whl")
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """scikit-image's astronaut (a real face), as a JPEG outside the repository."""
    from skimage import data
    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def test_the_wheel_holds_one_package_with_the_shipped_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {name.split("/")[0] for name in names}
    (dist_info,) = top - {PACKAGE}
    assert top == {PACKAGE, dist_info} and dist_info.endswith(".dist-info"), top
    modules = {name for name in os.listdir(os.path.join(ROOT, PACKAGE)) if name.endswith(".py")}
    assert {f"{PACKAGE}/{name}" for name in modules} <= names
    shipped = {name for name in names if name.startswith(f"{PACKAGE}/saved_models/")}
    assert shipped == {f"{PACKAGE}/saved_models/{name}" for name in SHIPPED}, shipped
    for name in SHIPPED:  # the repository's files, whole
        with open(os.path.join(ROOT, PACKAGE, "saved_models", name), "rb") as f:
            assert zipfile.ZipFile(wheel).read(f"{PACKAGE}/saved_models/{name}") == f.read()
    (entry_points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
    entry = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "facial-keypoints = facial_keypoints.detect:main" in entry


def test_the_package_requirements_hold_the_pins():
    """pyproject.toml's ranges admit the versions requirements.txt pins (what the tests run on);
    the light install is inference only; [train] brings the rest of the pins, torch pinned."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    pins = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            line = line.split("#")[0].strip()
            if line:
                requirement = Requirement(line)
                (spec,) = requirement.specifier
                assert spec.operator == "==", line
                pins[canonicalize_name(requirement.name)] = spec.version
    required = [Requirement(r) for r in project["dependencies"]]
    train = [Requirement(r) for r in project["optional-dependencies"]["train"]]
    assert {canonicalize_name(r.name) for r in required} == LIGHT
    for requirement in required + train:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement}: not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{requirement} excludes {name}=={pins[name]}"
    assert set(pins) == LIGHT | {canonicalize_name(r.name) for r in train} | TOOLS
    # An unpinned torch from PyPI is gigabytes of CUDA wheels: [train] asks for the pinned ones.
    assert {f"{name}=={pins[name]}" for name in ("torch", "torchvision")} <= {str(r) for r in train}
    assert project["scripts"] == {"facial-keypoints": "facial_keypoints.detect:main"}


def clean_env():
    """The environment for the fresh venv's commands: nothing leaks in from the dev environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def read_faces(jsonl):
    with open(jsonl) as f:
        return [json.loads(line) for line in f]


def test_the_light_install_runs_without_torch_and_matches_detect_py(wheel, photo, tmp_path):
    assert not str(tmp_path).startswith(ROOT + os.sep)
    env = clean_env()
    venv.create(tmp_path / "venv", with_pip=True)
    bin_dir = tmp_path / "venv" / "bin"
    python = str(bin_dir / "python")
    probe = subprocess.run([python, "-m", "pip", "download", "--no-deps", "--timeout", "20", "--retries", "1",
                            "--dest", str(tmp_path / "probe"), "tqdm"],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"the package index cannot be reached (pip download tqdm: {reason})")
    run([python, "-m", "pip", "install", "--quiet", str(wheel)], env=env, cwd=tmp_path)

    installed = run([python, "-c", "import importlib.metadata as m, json; "
                     "print(json.dumps(sorted(d.metadata['Name'].lower() for d in m.distributions())))"],
                    env=env, cwd=tmp_path)
    installed = set(json.loads(installed.stdout))
    assert LIGHT | {"facial-keypoints"} <= installed
    assert not {"torch", "torchvision", "opencv-python", "pandas", "scikit-image"} & installed, installed
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True, env=env,
                              cwd=tmp_path)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    # The command's modules and model are the installed ones, not the repository's.
    code = ("from facial_keypoints import backends, detect; "
            "print(detect.__file__, backends.DEFAULT_ONNX_MODEL)")
    where = run([python, "-c", code], env=env, cwd=tmp_path).stdout.split()
    assert all(path.startswith(str(tmp_path / "venv")) and os.path.isfile(path) for path in where), where
    # The documented API: one detector class and an image loader.
    code = ("from facial_keypoints import KeypointDetector, load_image; import sys; "
            "faces = KeypointDetector().detect(load_image(sys.argv[1])); "
            "print(len(faces) > 0, faces[0].keypoints.shape)")
    assert run([python, "-c", code, str(photo)], env=env, cwd=tmp_path).stdout.strip() == "True (68, 2)"

    # Both on the default backend ("auto"): onnxruntime, the shipped int8 copy.
    run([str(bin_dir / "facial-keypoints"), str(photo), "--json", "light.jsonl", "--out", "light"],
        env=env, cwd=tmp_path)
    assert os.path.isfile(tmp_path / "light" / photo.name)
    run([sys.executable, "detect.py", str(photo), "--json", str(tmp_path / "repo.jsonl"),
         "--out", str(tmp_path / "repo")], cwd=ROOT)

    light, repo = read_faces(tmp_path / "light.jsonl"), read_faces(tmp_path / "repo.jsonl")
    assert len(light) == len(repo) == 1 and len(repo[0]["faces"]) >= 1
    for got, want in zip(light, repo, strict=True):
        assert (got["image"], got["width"], got["height"]) == (want["image"], want["width"], want["height"])
        assert len(got["faces"]) == len(want["faces"])
        for got_face, want_face in zip(got["faces"], want["faces"], strict=True):
            for key in ("box", "keypoints", "roll"):
                np.testing.assert_allclose(got_face[key], want_face[key], rtol=0, atol=ATOL_PX, err_msg=key)
