"""Speed without changing results: `--workers N` gives the output of one process, the "auto"
backend picks the shipped int8 copy only while it matches the .pt, the int8 export is checked
before it is written, and the first pass that the detector's symmetry ranking has already run is
reused exactly."""

import filecmp
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import box_centre
from skimage import data

import export
from facial_keypoints import backends, detect, media
from models import Net, save_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(script, *args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def photo_folder(folder):
    """Images of the astronaut (whole, mirrored, smaller, in a sub-folder under a name used twice),
    one without a face and one corrupt file."""
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.jpg"), bgr)
    cv2.imwrite(str(folder / "b.png"), bgr[:, ::-1])
    cv2.imwrite(str(folder / "sub" / "a.jpg"), cv2.resize(bgr, (256, 256), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(folder / "blank.jpg"), np.full((120, 160, 3), 90, np.uint8))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")


def test_workers_write_what_one_process_writes(tmp_path):
    """Same JSON lines in the same order, same files, same one-line error for the bad image, with
    the images spread over two worker processes."""
    photo_folder(tmp_path / "photos")
    runs = {n: run_script("detect.py", "photos", "solo.png", "--workers", n, "--out", f"out{n}",
                          "--json", f"k{n}.jsonl", cwd=tmp_path) for n in (1, 2)}
    for result in runs.values():
        assert result.returncode == 1  # the broken image
        assert "Traceback" not in result.stderr
        assert result.stderr.count("broken.jpg") == 1 and len(result.stderr.strip().splitlines()) == 2
    assert runs[1].stdout == runs[2].stdout.replace("out2", "out1").replace("k2", "k1")
    assert runs[1].stderr == runs[2].stderr  # the missing solo.png, then the broken image
    lines = {n: (tmp_path / f"k{n}.jsonl").read_text().splitlines() for n in (1, 2)}
    records = [json.loads(line) for line in lines[1]]
    assert [r["image"] for r in records] == [os.path.join("photos", p)
                                             for p in ("a.jpg", "b.png", "blank.jpg", "sub/a.jpg")]
    assert [len(r["faces"]) for r in records] == [1, 1, 0, 1]
    for record, centre in zip(records, [(224, 113), (288, 113), None, (112, 56)], strict=True):
        if centre is not None:
            assert np.linalg.norm(box_centre(record["faces"][0]["box"]) - centre) < 10, record["image"]
    for one, two in zip(lines[1], lines[2], strict=True):  # one thread per worker: same sums, or
        one, two = json.loads(one), json.loads(two)        # last-digit differences at most
        assert one["image"] == two["image"] and len(one["faces"]) == len(two["faces"])
        for face_one, face_two in zip(one["faces"], two["faces"], strict=True):
            np.testing.assert_allclose(face_one["keypoints"], face_two["keypoints"], atol=0.02)
    written = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "out1")
                     for d, _, files in os.walk(tmp_path / "out1") for f in files)
    assert written == ["photos/a.jpg", "photos/b.png", "photos/blank.jpg", "photos/sub/a.jpg"]
    assert all((tmp_path / "out2" / name).is_file() for name in written)


def test_filters_run_on_workers(tmp_path):
    photo_folder(tmp_path / "photos")
    (tmp_path / "photos" / "broken.jpg").unlink()
    (tmp_path / "photos" / "blank.jpg").unlink()
    result = run_script("filters.py", "photos", "--workers", "2", "--filter", "hat", "--out", "out",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out" / "photos")) == ["a_hat.png", "b_hat.png", "sub"]


def test_a_worker_that_dies_is_one_line(tmp_path):
    photo_folder(tmp_path / "photos")
    (tmp_path / "dying.py").write_text(
        "import multiprocessing, os\nfrom facial_keypoints import detect\n"
        "def make(args):  # dies in each worker process, as if killed for memory\n"
        "    if multiprocessing.parent_process() is not None:\n"
        "        os._exit(3)\n"
        "    return detect.build_detector(args)\n")
    code = ("import functools, sys, dying\nfrom facial_keypoints import detect, media, runner\n"
            "args = detect.parse_args(['photos', '--workers', '2', '--out', 'out'])\n"
            "action = runner.Action(media.draw_faces)\n"
            "sys.exit(runner.run(args, functools.partial(dying.make, args), action))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONPATH=f"{ROOT}:{tmp_path}"))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "worker process died" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_workers_option_is_checked(tmp_path):
    result = run_script("detect.py", "--workers", "0", cwd=tmp_path)
    assert result.returncode == 2 and "--workers" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# The "auto" backend and the int8 copy.

def test_auto_backend_runs_the_shipped_int8_copy_while_it_matches_the_pt():
    model = backends.load_backend()
    assert (model.name, model.path) == ("onnx", backends.DEFAULT_INT8_MODEL)
    assert model.meta["source_sha256"] == backends.sha256(backends.DEFAULT_MODEL), \
        "saved_models/keypoints_model.int8.onnx is out of date: run `python export.py`"
    assert backends.load_backend("onnx").path == backends.DEFAULT_ONNX_MODEL
    assert backends.load_backend("torch").name == "torch"


def test_auto_backend_falls_back_to_pytorch_when_the_exports_are_stale(tmp_path, monkeypatch):
    other = tmp_path / "other.pt"
    save_model(Net(48, widths=(4, 8, 8, 16, 16), hidden=32), str(other),
               {"arch": "net", "input_size": 48, "model_options": {"widths": [4, 8, 8, 16, 16], "hidden": 32},
                "crop_margin": 1.3, "crop_shift": 0.1})
    monkeypatch.setattr(backends, "DEFAULT_MODEL", str(other))
    monkeypatch.setitem(backends.DEFAULT_MODELS, "torch", str(other))
    assert backends.load_backend().name == "torch"  # the ONNX files were exported from another .pt
    monkeypatch.setattr(backends, "installed", lambda package: package != "torch")
    assert backends.load_backend().path == backends.DEFAULT_INT8_MODEL  # no PyTorch: ONNX anyway


def test_a_file_picks_its_backend_by_extension():
    assert backends.load_backend(model_path=backends.DEFAULT_ONNX_MODEL).name == "onnx"
    assert backends.load_backend(model_path=backends.DEFAULT_MODEL).name == "torch"


@pytest.fixture
def training_faces(tmp_path, monkeypatch):
    """FKP_DATA with a few training and test faces (the astronaut, labelled by the shipped model)."""
    root = tmp_path / "data"
    rgb = data.astronaut()
    keypoints = detect.KeypointDetector(backend="torch").detect(rgb)[0].keypoints
    header = "," + ",".join(str(i) for i in range(136))
    for split in ("training", "test"):
        (root / split).mkdir(parents=True)
        lines = [header]
        for i in range(6):
            name = f"Astronaut_{split}_{i}.jpg"
            shifted = np.roll(rgb, 8 * i, axis=1)
            cv2.imwrite(str(root / split / name), cv2.cvtColor(shifted, cv2.COLOR_RGB2BGR))
            points = keypoints + [8 * i, 0]
            lines.append(name + "," + ",".join(repr(float(v)) for v in points.ravel()))
        (root / f"{split}_frames_keypoints.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("FKP_DATA", str(root))
    return root


def test_export_writes_an_int8_copy_beside_the_onnx_file(training_faces, tmp_path, monkeypatch):
    """The int8 copy, its metadata and no temporary file; its accuracy check is the next test's
    business (six calibration faces are too few for the real limit)."""
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(export, "INT8_TOLERANCE", 1.0)
    with torch.random.fork_rng():
        export.main(["--model", backends.DEFAULT_MODEL, "--out", str(out), "--crops", "4"])
    int8 = backends.OnnxModel(export.int8_path(str(out)))
    assert int8.meta["source_sha256"] == backends.sha256(backends.DEFAULT_MODEL)
    assert os.path.getsize(int8.path) < 0.5 * os.path.getsize(out)  # the stem and heads stay float
    assert sorted(os.listdir(tmp_path)) == ["data", "m.int8.onnx", "m.onnx"]  # no temporary files left


def test_export_keeps_the_old_int8_copy_if_the_new_one_loses_accuracy(training_faces, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    with open(backends.DEFAULT_INT8_MODEL, "rb") as f:  # an ONNX model: what --out may replace
        old_copy = f.read()
    (tmp_path / "m.int8.onnx").write_bytes(old_copy)
    monkeypatch.setattr(export, "INT8_TOLERANCE", -1.0)  # no int8 copy can pass
    with torch.random.fork_rng(), pytest.raises(SystemExit, match="not written"):
        export.main(["--model", backends.DEFAULT_MODEL, "--out", str(out), "--crops", "4"])
    assert (tmp_path / "m.int8.onnx").read_bytes() == old_copy
    assert sorted(os.listdir(tmp_path)) == ["data", "m.int8.onnx", "m.onnx"]


# ---------------------------------------------------------------------------------------------
# The first pass.

def test_the_ranking_keypoints_are_the_first_pass_flip_averaged():
    """A face the turned copies find too: find_faces returns the keypoints its ranking computed,
    the same as a flip-averaged first pass on the kept crop."""
    detector = detect.KeypointDetector(face_detector=detect.FaceDetector())   # the Haar cascade's copies
    gray = media.to_gray(data.astronaut())
    boxes, angles, keypoints = detector.find_faces(gray)
    assert keypoints is not None and len(boxes) == 1
    again = detector.predict_boxes(gray, boxes, angles, flip_average=True)
    np.testing.assert_allclose(keypoints, again, atol=1e-9)
    reused = detector.keypoints_for_boxes(gray, boxes, angles, first=keypoints)
    np.testing.assert_allclose(detector.detect(gray)[0].keypoints, reused[0], atol=1e-9)


def test_no_ranking_no_keypoints():
    detector = detect.KeypointDetector(face_detector=detect.FaceDetector(rotations=()))
    boxes, angles, keypoints = detector.find_faces(media.to_gray(data.astronaut()))
    assert len(boxes) == 1 and keypoints is None


def test_outputs_are_identical_for_one_process_run_twice(tmp_path):
    """Determinism: the same command twice gives byte-identical JSON and images."""
    photo_folder(tmp_path / "photos")
    for n in (1, 2):
        run_script("detect.py", "photos", "--workers", "2", "--out", f"out{n}", "--json", f"k{n}.jsonl",
                   cwd=tmp_path)
    assert (tmp_path / "k1.jsonl").read_bytes() == (tmp_path / "k2.jsonl").read_bytes()
    assert filecmp.cmp(tmp_path / "out1" / "photos" / "a.jpg", tmp_path / "out2" / "photos" / "a.jpg",
                       shallow=False)
