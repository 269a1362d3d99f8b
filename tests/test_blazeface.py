"""BlazeFace, the default face detector: where its boxes sit, the roll it reads, the pyramid that
finds small faces, its merging, its model file, and the command line's --face-detector."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import FACE_CROP, box_centre, turned
from skimage import data

import cluster
import export
import filters
from facial_keypoints import blazeface, detect, media
from facial_keypoints.face_crop import angle_between, eye_roll, keypoints_to_box
from facial_keypoints.media import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def face():
    """The cropped astronaut in gray (300 x 300) and the Haar cascade's box on her face."""
    gray = media.to_gray(np.ascontiguousarray(data.astronaut()[FACE_CROP]))
    [box] = detect.FaceDetector(rotations=())(gray)
    return gray, box


def test_its_box_sits_on_the_face_as_the_cascade_would_draw_it(face):
    """The crop the keypoint network expects is cut from a Haar-like box: BlazeFace's box is
    mapped onto the one the cascade typically draws on the face's landmarks (BOX_SCALE, BOX_DROP;
    face_crop.keypoints_to_box), here the course head's landmarks."""
    gray, _ = face
    haar_only = detect.FaceDetector(rotations=())
    [found] = detect.KeypointDetector(face_detector=haar_only, convention="course").detect(gray)
    expected = keypoints_to_box(found.keypoints)
    scores, boxes, rolls = blazeface.BlazeFace()(gray)
    best = int(np.argmax(scores))
    assert scores[best] > 0.8
    assert np.linalg.norm(box_centre(boxes[best]) - box_centre(expected)) < 0.1 * expected[2]
    assert abs(np.log(boxes[best][2] / expected[2])) < 0.15
    assert abs(rolls[best]) < 10  # her head is nearly level


@pytest.mark.parametrize("degrees", [-40.0, 25.0])
def test_a_tilted_head_is_found_once_and_its_crop_turned_by_its_roll(face, degrees):
    """No turned copies: the network finds the tilted face and reads its roll from the eye line;
    the keypoints the pipeline then gives have that roll too."""
    gray, haar = face
    tilted, turn = turned(gray, degrees)
    boxes, angles = detect.BlazeFaceDetector().find(tilted)
    centre = cv2.transform(box_centre(haar)[None, None], turn)[0, 0]
    near = [i for i, box in enumerate(boxes) if np.linalg.norm(box_centre(box) - centre) < 0.25 * haar[2]]
    assert len(near) == 1
    # the image turned counter-clockwise by `degrees`: the face's roll is now about -degrees
    assert abs(angle_between(angles[near[0]], -degrees)) < 10
    [keypoints] = detect.KeypointDetector().keypoints_for_boxes(tilted, boxes[near], angles[near])
    assert abs(angle_between(eye_roll(keypoints), -degrees)) < 8


def test_small_faces_are_found_down_to_min_size_and_no_smaller(face):
    """A 45-pixel face in a 640x480 frame is too small for the whole frame at 128 pixels: the
    pyramid's finer levels find it, and a min_size far above it leaves those levels out."""
    gray, haar = face
    scale = 45 / haar[2]
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640), 128, np.uint8)
    frame[200:200 + small.shape[0], 300:300 + small.shape[1]] = small
    centre = box_centre(haar) * scale + (300, 200)
    finder = blazeface.BlazeFace(min_size=30)
    assert finder.scales(480, 640)[0] == pytest.approx(blazeface.SMALLEST_FACE / 30)
    assert finder.scales(480, 640)[-1] == pytest.approx(128 / 640)
    _, boxes, _ = finder(frame)
    assert any(np.linalg.norm(box_centre(box) - centre) < 10 for box in boxes)
    _, boxes, _ = blazeface.BlazeFace(min_size=120)(frame)
    assert not any(np.linalg.norm(box_centre(box) - centre) < 20 for box in boxes)
    assert any(np.linalg.norm(box_centre(box) - centre) < 10 for box in detect.BlazeFaceDetector(30)(frame))


def test_a_large_photo_is_searched_at_most_max_side_pixels_across(face):
    """A phone photo is not searched at full size (as the Haar cascade's max_side): the pyramid
    starts at max_side pixels, and a face that fills a fifth of the photo is still found."""
    gray, haar = face
    finder = blazeface.BlazeFace()
    scales = finder.scales(3024, 4032)
    assert scales[0] * 4032 == pytest.approx(1024) and scales[-1] * 4032 == pytest.approx(128)
    assert blazeface.BlazeFace(max_side=8192).scales(3024, 4032)[0] == pytest.approx(
        blazeface.SMALLEST_FACE / 30)
    large = cv2.resize(gray, None, fx=8, fy=8, interpolation=cv2.INTER_LINEAR)  # 2400 x 2400
    _, boxes, _ = finder(large)
    assert any(np.linalg.norm(box_centre(box) - 8 * box_centre(haar)) < 0.1 * 8 * haar[2] for box in boxes)


@pytest.mark.parametrize("as_jpeg", [False, True])
def test_the_astronauts_neck_ring_is_not_a_face(as_jpeg):
    """BlazeFace takes the astronaut's neck ring for a face too; the face check drops it. Only the
    astronaut's face comes out."""
    image = data.astronaut()
    if as_jpeg:
        image = cv2.imdecode(cv2.imencode(".jpg", image)[1], cv2.IMREAD_UNCHANGED)
    detector = detect.KeypointDetector()
    scores, _, _ = detector.face_detector.network(media.to_gray(image))
    assert len(scores) == 2
    [face] = detector.detect(image)
    assert np.linalg.norm(box_centre(face.box) - (224, 113)) < 10


class ListedFaces(detect.BlazeFaceDetector):
    """A face detector that finds the (score, box, angle) detections it was given."""

    def __init__(self, found):
        self.found = found

    def candidates(self, gray, rotations=None):
        return self.found


@pytest.mark.parametrize("limit", [detect.MAX_FLIP_DISAGREEMENT, 0.2])
def test_an_unsure_detection_must_pass_the_face_check_on_its_first_crop_too(monkeypatch, limit):
    """check_unsure reads the first crops of the detections scored below check_first_below and
    drops those whose first crop fails the detector's face check (a reading at the limit passes);
    sure ones are kept whatever they read, each with its own keypoints."""
    below = detect.BlazeFaceDetector.check_first_below
    sure, unsure = below + 0.1, below - 0.05
    # box origin -> (score, its first crop's flip disagreement)
    listed = {(0, 0): (sure, 2 * limit), (100, 0): (unsure, limit), (0, 100): (unsure, 1.01 * limit),
              (100, 100): (sure, 0.5 * limit), (200, 0): (unsure, 0.5 * limit)}
    found = [(score, (x, y, 40, 40), 0.0) for (x, y), (score, _) in listed.items()]
    detector = detect.KeypointDetector(face_detector=ListedFaces(found), max_disagreement=limit)

    def read_both_ways(gray, boxes, angles):
        origins = [tuple(int(v) for v in box[:2]) for box in boxes]
        keypoints = np.stack([np.full((68, 2), x + y / 1000) for x, y in origins])
        return np.array([listed[origin][1] for origin in origins]), keypoints

    monkeypatch.setattr(detector, "read_both_ways", read_both_ways)
    gray = np.zeros((300, 300), np.uint8)
    boxes, _, keypoints = detector.find_faces(gray)
    kept = [(0, 0), (100, 0), (100, 100), (200, 0)]  # (0, 100) is unsure and failed
    assert [tuple(box[:2]) for box in boxes] == kept
    np.testing.assert_array_equal(keypoints[:, 0, 0], [x + y / 1000 for x, y in kept])
    # Without a face check (no flip averaging, or no limit) nothing is read twice or dropped.
    for unchecked in (detect.KeypointDetector(face_detector=ListedFaces(found), flip_average=False),
                      detect.KeypointDetector(face_detector=ListedFaces(found), max_disagreement=None)):
        monkeypatch.setattr(unchecked, "read_both_ways", read_both_ways)
        boxes, _, keypoints = unchecked.find_faces(gray)
        assert len(boxes) == 5 and keypoints is None


def test_a_level_smaller_than_the_input_is_padded_black_as_mediapipe_does():
    """Each pyramid level is padded to the network's input (and to a multiple of 16) with black,
    -1 in the network's range, as MediaPipe pads: mid-grey padding gave more false detections."""
    finder, seen = blazeface.BlazeFace(), []
    run = finder.session.run

    def recording_run(outputs, feeds):
        seen.append(feeds["gray"])
        return run(outputs, feeds)

    finder.session = type("Recording", (), {"run": staticmethod(recording_run)})()
    finder.level(np.full((50, 100), 255, np.uint8), 1.0)
    [gray] = seen
    assert gray.shape == (1, 1, 128, 128)
    assert np.all(gray[0, 0, :50, :100] == 1.0) and np.all(gray[0, 0, 50:] == -1.0)
    assert np.all(gray[0, 0, :, 100:] == -1.0)


def test_detections_of_one_face_merge_into_their_weighted_mean():
    scores = np.array([0.9, 0.6, 0.8])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    points = np.stack([np.full((6, 2), v) for v in (0.0, 3.0, 7.0)])
    merged_scores, merged_boxes, merged_points = blazeface.weighted_nms(scores, boxes, points)
    np.testing.assert_allclose(merged_scores, [0.9, 0.8])
    np.testing.assert_allclose(merged_boxes[0], [0.4, 0.4, 10.4, 10.4])  # (0.9 * 0 + 0.6 * 1) / 1.5
    np.testing.assert_allclose(merged_points[0], 1.2)
    np.testing.assert_allclose(merged_boxes[1], boxes[2])
    # a box of no area is a face of its own, not a division by zero
    merged_scores, merged_boxes, _ = blazeface.weighted_nms(np.array([0.7]), np.array([[5.0, 5, 5, 5]]),
                                                            points[:1])
    assert merged_scores.tolist() == [0.7] and np.isfinite(merged_boxes).all()


def test_a_missing_or_unreadable_model_file_is_one_line(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.onnx: .*write it with `python export.py`"):
        blazeface.BlazeFace(str(tmp_path / "nothing.onnx"))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"broken\.onnx: not a readable ONNX model") as error:
        blazeface.BlazeFace(str(broken))
    assert "\n" not in str(error.value)
    keypoint_model = os.path.join(os.path.dirname(blazeface.BLAZEFACE_MODEL), "keypoints_model.onnx")
    with pytest.raises(DataError, match=r"keypoints_model\.onnx: not the face detector's graph"):
        blazeface.BlazeFace(keypoint_model)


def test_the_shipped_onnx_copy_is_the_tflite_files_export():
    """The package runs the ONNX copy; export.py wrote it from the TFLite file beside it, and the
    two read images alike."""
    assert export.face_detector_up_to_date()
    assert export.face_detector_difference(blazeface.BLAZEFACE_TFLITE, blazeface.BLAZEFACE_MODEL) <= 1e-3


def test_export_writes_a_checked_copy_and_refuses_a_file_that_is_not_blazeface(tmp_path):
    out = str(tmp_path / "detector.onnx")
    assert export.export_face_detector(out=out).startswith(f"wrote {out}")
    assert export.export_face_detector(out=out).startswith(f"{out}: up to date")
    scores, boxes, _ = blazeface.BlazeFace(out)(media.to_gray(data.astronaut()))
    assert len(scores) >= 1
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model")
    with pytest.raises(DataError, match=r"broken\.tflite: OpenCV could not read it"):
        export.export_face_detector(str(broken), str(tmp_path / "other.onnx"))
    assert not (tmp_path / "other.onnx").exists()


def run_detect(*args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "detect.py"), *map(str, args)], cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)


def test_every_command_builds_the_face_detector_it_is_asked_for():
    """detect.py, filters.py and cluster.py's workers: BlazeFace by default, the Haar cascade with
    its options on --face-detector haar."""
    default = detect.build_detector(detect.parse_args(["photo.jpg", "--min-size", "40"])).face_detector
    assert type(default) is detect.BlazeFaceDetector and default.network.min_size == 40
    options = ["photo.jpg", "--face-detector", "haar", "--upright-only", "--min-size", "40",
               "--scale-factor", "1.1"]
    haar = detect.build_detector(detect.parse_args(options)).face_detector
    assert type(haar) is detect.FaceDetector and haar.rotations == ()
    assert (haar.min_size, haar.scale_factor, haar.min_neighbors) == (40, 1.1, 2)
    turned = filters.build_detector(filters.parse_args(["photo.jpg", "--face-detector", "haar"]))
    turned = turned.face_detector
    assert type(turned) is detect.FaceDetector and turned.rotations == detect.FaceDetector.ROTATIONS
    default = filters.build_detector(filters.parse_args(["photo.jpg"])).face_detector
    assert type(default) is detect.BlazeFaceDetector
    workers = cluster.parse_args(["photos", "--json", "x.jsonl", "--face-detector", "haar"]).worker_detector
    assert type(detect.build_detector(workers).face_detector) is detect.FaceDetector


def test_the_command_line_runs_either_face_detector(tmp_path, face):
    """Both find the face, where the other does (BlazeFace's box is mapped onto the cascade's)."""
    gray, haar = face
    cv2.imwrite(str(tmp_path / "face.png"), gray)
    boxes = {}
    for name in ("blazeface", "haar"):
        done = run_detect("face.png", "--face-detector", name, "--json", f"{name}.jsonl", "--out", "out",
                          cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        [face_record] = __import__("json").loads((tmp_path / f"{name}.jsonl").read_text())["faces"]
        boxes[name] = face_record["box"]
    assert np.linalg.norm(box_centre(boxes["blazeface"]) - box_centre(boxes["haar"])) < 0.1 * haar[2]
    done = run_detect("face.png", "--upright-only", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("detect.py: --upright-only is for --face-detector haar: BlazeFace finds "
                                   "tilted heads in one pass (--help lists the options)")
