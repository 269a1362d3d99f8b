"""detect.py: the library on composed images, the video tracker and smoother, and the command line
(JSON schema, bad input, image formats, video round trip) run as a user runs it."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import FACE_CROP, box_centre, face_keypoints, turned
from skimage import data

from facial_keypoints import detect, face_crop, media, tracking
from facial_keypoints.media import data_path, load_image, read_keypoints_csv
from facial_keypoints.outputs import Outputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DETECT_PY = os.path.join(ROOT, "detect.py")
RECORD_KEYS = {"image", "width", "height", "convention", "faces"}
# The astronaut's face: crop of skimage's photo in which the Haar cascade finds that face only.


def run_cli(*args, cwd):
    """detect.py as a user runs it; OMP_NUM_THREADS=1 keeps it light on a small machine."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, DETECT_PY, *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def check_record(record, width, height, frame=None):
    """The exact JSON schema: keys, types, 68 (x, y) pairs of plain numbers per face. Every caller
    runs the shipped two-head model without --convention: its records name the default, 300w."""
    assert set(record) == RECORD_KEYS | ({"frame"} if frame is not None else set())
    assert (record["width"], record["height"]) == (width, height)
    assert record["convention"] == "300w"
    if frame is not None:
        assert record["frame"] == frame and isinstance(record["frame"], int)
    for face in record["faces"]:
        assert set(face) == {"box", "keypoints", "roll"} and isinstance(face["roll"], float)
        assert len(face["box"]) == 4 and all(isinstance(v, float) for v in face["box"])
        assert len(face["keypoints"]) == 68
        assert all(len(p) == 2 and all(isinstance(v, float) and np.isfinite(v) for v in p)
                   for p in face["keypoints"])


def astronaut_face():
    """The cropped astronaut (RGB, 300 x 300) and the centre of its face, found by the detector."""
    image = np.ascontiguousarray(data.astronaut()[FACE_CROP])
    boxes = detect.FaceDetector()(media.to_gray(image))
    assert len(boxes) == 1, boxes
    return image, box_centre(boxes[0])


def write_rgb(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def detector():
    return detect.KeypointDetector()


# ---------------------------------------------------------------------------------------------
# The library.

def test_several_astronauts_one_result_each_in_place(detector):
    face, centre = astronaut_face()
    gap = 20  # 980 px wide: no downscaling for detection
    canvas = np.full((face.shape[0] + 2 * gap, 3 * (face.shape[1] + gap) + gap, 3), 120, np.uint8)
    origins = [np.array([gap + i * (face.shape[1] + gap), gap]) for i in range(3)]
    for x, y in origins:
        canvas[y:y + face.shape[0], x:x + face.shape[1]] = face
    faces = detector.detect(canvas)
    assert len(faces) == 3
    side = faces[0].box[2]
    for origin in origins:
        found = [f for f in faces if np.linalg.norm(box_centre(f.box) - (origin + centre)) < 0.2 * side]
        assert len(found) == 1, f"no single face near {origin + centre}"
        assert found[0].keypoints.shape == (68, 2)
        assert np.linalg.norm(found[0].keypoints.mean(0) - (origin + centre)) < 0.5 * side


def test_composed_test_set_faces_found_in_place(dataset_dir, detector):
    """Three labelled test faces pasted side by side: one result per face, keypoints near the labels."""
    frame = read_keypoints_csv(data_path("test_frames_keypoints.csv"))
    pasted, height = [], 220
    for name, values in zip(frame.iloc[:, 0], frame.iloc[:, 1:].to_numpy(float), strict=True):
        image = load_image(data_path("test", name))
        scale = height / image.shape[0]
        image = cv2.resize(image, (round(image.shape[1] * scale), height), interpolation=cv2.INTER_AREA)
        if len(detector.face_detector(media.to_gray(image))) == 1:  # clean single-face images
            pasted.append((image, values.reshape(68, 2) * scale))
        if len(pasted) == 3:
            break
    canvas = np.full((height, sum(p[0].shape[1] for p in pasted), 3), 127, np.uint8)
    x, labels = 0, []
    for image, keypoints in pasted:
        canvas[:, x:x + image.shape[1]] = image
        labels.append(keypoints + [x, 0])
        x += image.shape[1]
    faces = detector.detect(canvas)
    assert len(faces) == 3
    for truth in labels:
        (x0, y0), (x1, y1) = truth.min(0), truth.max(0)
        inside = [f for f in faces if x0 < box_centre(f.box)[0] < x1 and y0 < box_centre(f.box)[1] < y1]
        assert len(inside) == 1
        interocular = np.linalg.norm(truth[36] - truth[45])
        error = np.linalg.norm(inside[0].keypoints - truth, axis=1).mean() / interocular
        assert error < 0.25, f"keypoints far from the labelled face: NME {error:.2f}"


def test_refine_recentres_a_badly_placed_box(detector):
    """A detector box shifted by 15 % of its side: the second pass (crop from the box the first
    keypoints imply) lands closer to the keypoints predicted from the detector's own box."""
    face, _ = astronaut_face()
    box = detector.face_detector(media.to_gray(face))[0]
    reference = detector.keypoints_for_boxes(face, [box])[0]
    shifted = box + [0.15 * box[2], 0.15 * box[3], 0, 0]
    once = detector.keypoints_for_boxes(face, [shifted], refine=False)[0]
    refined = detector.keypoints_for_boxes(face, [shifted], refine=True)[0]
    def error(points):
        return np.linalg.norm(points - reference, axis=1).mean()

    assert error(refined) < error(once)


def test_last_crop_is_the_mean_of_its_shifted_crops(detector):
    """predict_boxes with shifts reads one crop per shift (each box moved by that fraction of its
    side) and averages their keypoints in image pixels, face by face. keypoints_for_boxes reads
    three passes by default (a first crop one way, the crop its keypoints imply both ways); with
    accurate=True a middle crop comes between, and the last crop is read at CROP_SHIFTS."""
    face, _ = astronaut_face()
    gray = media.to_gray(face)
    box = detector.face_detector(gray)[0]
    boxes = np.stack([box, box + [20, 10, -30, -30]])  # two faces' boxes in one batch
    shifts = detect.CROP_SHIFTS
    averaged = detector.predict_boxes(gray, boxes, [0.0, 10.0], shifts=shifts)
    one_by_one = [np.mean([detector.predict_boxes(gray, [b + [dx * b[2], dy * b[3], 0, 0]], [angle])[0]
                           for dx, dy in shifts], axis=0)
                  for b, angle in zip(boxes, [0.0, 10.0], strict=True)]
    np.testing.assert_allclose(averaged, one_by_one, atol=1e-3)
    unshifted = detector.predict_boxes(gray, boxes, [0.0, 10.0])
    assert np.abs(averaged - unshifted).max() > 0.05  # the shifted crops read differently

    accurate = detect.KeypointDetector(accurate=True)
    start = detector.predict_boxes(gray, [box], flip_average=False)
    lean_box, lean_angle = detector.next_crops(start)
    np.testing.assert_allclose(detector.keypoints_for_boxes(face, [box]),
                               detector.predict_boxes(gray, lean_box, lean_angle), atol=1e-6)
    last_box, last_angle = detector.next_crops(detector.predict_boxes(gray, lean_box, lean_angle,
                                                                      flip_average=False))
    np.testing.assert_allclose(accurate.keypoints_for_boxes(face, [box]),
                               detector.predict_boxes(gray, last_box, last_angle, shifts=shifts), atol=1e-6)


def test_the_default_step_is_three_forward_passes_per_face(monkeypatch):
    """A first crop read one way, then the refine crop read both ways: three network inputs per
    face; accurate=True reads twelve (one, one, then five shifted crops both ways)."""
    face, _ = astronaut_face()
    inputs = []
    one_way, both_ways = detect.predict_normalized, detect.predict_both_ways
    monkeypatch.setattr(detect, "predict_normalized", lambda model, crops: inputs.append(len(crops)) or
                        one_way(model, crops))
    monkeypatch.setattr(detect, "predict_both_ways", lambda model, crops: inputs.append(2 * len(crops)) or
                        both_ways(model, crops))
    for accurate, passes in ((False, 3), (True, 12)):
        counted = detect.KeypointDetector(accurate=accurate)
        box = counted.face_detector(media.to_gray(face))[0]
        inputs.clear()
        counted.keypoints_for_boxes(face, [box, box + [5, 5, 0, 0]])
        assert sum(inputs) == 2 * passes, (accurate, inputs)


def test_one_euro_filter_smooths_noise_and_follows_steps():
    rng = np.random.default_rng(0)
    f = tracking.OneEuroFilter(min_cutoff=1.0, beta=5.0)
    noisy = np.array([[10.0, 20.0]]) + rng.normal(0, 0.5, (200, 1, 2))
    out = np.stack([f(x, 1 / 30, scale=100) for x in noisy])
    assert out[50:].std(0).max() < 0.5 * noisy[50:].std(0).min()
    assert np.allclose(out[50:].mean(0), [[10, 20]], atol=0.2)
    step = [f(np.array([[40.0, 20.0]]), 1 / 30, scale=100)[0, 0] for _ in range(30)]
    assert 10 < step[0] < 40 and np.all(np.diff(step) >= 0) and step[-1] > 39  # no overshoot, no lag


def test_box_iou():
    a = np.array([[0, 0, 10, 10]])
    iou = face_crop.box_iou(a, [[0, 0, 10, 10], [20, 20, 5, 5], [5, 0, 10, 10]])
    assert np.allclose(iou, [[1.0, 0.0, 1 / 3]])


def test_tracker_keeps_ids_detects_every_k_frames_and_smooths(detector):
    """A still face through noisy frames: one track id throughout, the Haar cascade on every
    k-th frame only, and less keypoint jitter with the One Euro filter than without."""
    face, _ = astronaut_face()
    rng = np.random.default_rng(1)
    frames = [np.clip(face + rng.normal(0, 3, face.shape), 0, 255).astype(np.uint8) for _ in range(24)]
    counts = {}
    tracks = {}
    for smooth in (False, True):
        calls = []
        tracker = tracking.FaceTracker(detector, fps=30, detect_every=6, smooth=smooth)
        detector.find_faces = lambda gray, rotations=None, calls=calls: calls.append(1) or type(
            detector).find_faces(detector, gray, rotations)
        try:
            results = [tracker(frame) for frame in frames]
        finally:
            del detector.find_faces
        counts[smooth] = len(calls)
        assert all(len(r) == 1 for r in results)
        assert len({r[0].track_id for r in results}) == 1
        tracks[smooth] = np.stack([r[0].keypoints for r in results])
    assert counts[False] == counts[True] == 4
    jitter = {s: np.sqrt(k[4:].var(0).sum(-1)).mean() for s, k in tracks.items()}
    assert jitter[True] < jitter[False]


# Boxes on the astronaut photo (skimage, 512 x 512) where no face is: her suit and the flag.
NOT_FACES = ([20.0, 300.0, 120.0, 120.0], [0.0, 0.0, 150.0, 150.0])


class StubFaceDetector(detect.FaceDetector):
    """The Haar detector's interface with fixed detections, all upright."""

    def __init__(self, boxes):
        super().__init__()
        self.boxes = boxes

    def candidates(self, gray, rotations=None):
        return [(1.0, np.array(box, dtype=np.float64), 0.0) for box in self.boxes]


def test_the_face_check_drops_detections_that_show_no_face():
    """A box on the face passes; boxes on the suit and the flag, where the network reads the crop
    and its mirror image differently, get NaN keypoints and are left out of detect(); with the
    check switched off (max_disagreement=None) they get keypoints like any face."""
    photo = data.astronaut()
    face_box = detect.FaceDetector()(media.to_gray(photo))
    assert len(face_box) == 1
    boxes = [face_box[0], *NOT_FACES]
    checked = detect.KeypointDetector(face_detector=StubFaceDetector(boxes))
    keypoints = checked.keypoints_for_boxes(photo, boxes)
    assert np.isfinite(keypoints[0]).all() and np.isnan(keypoints[1:]).all()
    faces = checked.detect(photo)
    assert len(faces) == 1 and np.allclose(faces[0].box, face_box[0])
    assert np.isfinite(checked.keypoints_for_boxes(photo, boxes, refine=False)[1:]).sum() == 0
    unchecked = detect.KeypointDetector(face_detector=StubFaceDetector(boxes), max_disagreement=None)
    assert np.isfinite(unchecked.keypoints_for_boxes(photo, boxes)).all()
    assert len(unchecked.detect(photo)) == 3


def test_tracker_ends_a_track_whose_crop_shows_no_face(detector):
    """A tracked face replaced by sensor noise between detection rounds: the face check ends the
    track on that frame, instead of drawing keypoints on the noise until the next round."""
    face, _ = astronaut_face()
    noise = np.random.default_rng(3).integers(0, 256, face.shape, dtype=np.uint8)
    tracker = tracking.FaceTracker(detector, fps=30, detect_every=100)
    assert [len(tracker(face)) for _ in range(3)] == [1, 1, 1]
    assert tracker(noise) == [] and tracker.tracks == []


def test_box_moved():
    assert face_crop.box_moved([0, 0, 100, 100], [0, 0, 100, 100]) == 0
    assert face_crop.box_moved([0, 0, 100, 100], [0.5, -2, 100, 100]) == pytest.approx(0.02)
    assert face_crop.box_moved([0, 0, 100, 100], [-1, -1, 102, 102]) == pytest.approx(0.02)


def test_tracker_holds_the_crop_box_of_a_still_face(detector):
    """Sensor noise alone must not move a track's crop box (hold), while a real move does."""
    face, _ = astronaut_face()
    rng = np.random.default_rng(2)
    frames = [np.clip(face + rng.normal(0, 3, face.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    boxes = {}
    for hold in (0.0, 0.05):
        tracker = tracking.FaceTracker(detector, fps=30, detect_every=100, hold=hold)
        boxes[hold] = []
        for frame in frames:
            tracker(frame)
            boxes[hold].append(tracker.tracks[0].box.copy())
    assert len({tuple(b) for b in boxes[0.0][1:]}) > 1  # without hold the box follows the noise
    assert len({tuple(b) for b in boxes[0.05][1:]}) == 1
    moved = np.roll(frames[0], 12, axis=1)  # 12 px to the right: more than 5 % of the face
    tracker(moved)
    assert tracker.tracks[0].box[0] > boxes[0.05][-1][0] + 6


def test_outputs_never_overwrite_an_input(tmp_path):
    (tmp_path / "photos").mkdir()
    for name in ("a.png", "photos/b.png"):
        write_rgb(tmp_path / name, np.zeros((8, 8, 3), np.uint8))
    outputs = Outputs(str(tmp_path), inputs=[str(tmp_path / "a.png"), str(tmp_path / "photos")])
    first, second = outputs.path_for("a.png"), outputs.path_for("a.png")
    assert len({first, second, str(tmp_path / "a.png")}) == 3
    assert os.path.dirname(first) == str(tmp_path)
    assert outputs.path_for("photos/b.png") != str(tmp_path / "photos" / "b.png")
    assert outputs.path_for("c.png") == str(tmp_path / "c.png")


# ---------------------------------------------------------------------------------------------
# Tilted heads: found in turned copies, cropped upright, tracked with their roll.

def test_upright_box_turns_the_crop_so_the_eyes_are_level():
    upright = face_keypoints(center=(150.0, 150.0))
    for degrees in (-100.0, -40.0, -3.0, 25.0, 90.0, 180.0):
        _, turn = turned(np.zeros((300, 300), np.uint8), degrees)
        points = face_crop.transform_points(upright, turn)
        assert abs(face_crop.angle_between(face_crop.eye_roll(points), -degrees)) < 1e-6
        box, angle = face_crop.upright_box(points, max_roll=5.0)
        crop = face_crop.crop_matrix(box, 112, angle=angle)
        in_crop = face_crop.transform_points(points, crop)
        residual = face_crop.eye_roll(in_crop)
        assert abs(residual) <= 5.0 + 1e-6 and (abs(degrees) <= 5 or abs(residual) > 4.99)
        # centred as training centres the upright face: the landmark box centre mid-crop
        assert np.abs((in_crop.min(0) + in_crop.max(0)) / 2 - 55.5).max() < 4
        back = face_crop.transform_points(in_crop, face_crop.invert_matrix(crop))
        np.testing.assert_allclose(back, points, atol=1e-9)


@pytest.mark.parametrize("degrees", [-40.0, 30.0])
def test_a_tilted_head_is_found_and_its_keypoints_follow_it(detector, degrees):
    face, _ = astronaut_face()
    [upright] = detector.detect(face)
    tilted, turn = turned(face, degrees)
    expected = face_crop.transform_points(upright.keypoints, turn)
    eye_distance = np.linalg.norm(expected[36] - expected[45])
    found = min(detector.detect(tilted), key=lambda f: np.linalg.norm(f.keypoints - expected, axis=1).mean())
    assert np.linalg.norm(found.keypoints - expected, axis=1).mean() < 0.05 * eye_distance
    assert abs(found.roll - face_crop.angle_between(upright.roll - degrees, 0.0)) < 4


def test_a_large_image_searches_its_turned_copies_at_half_resolution(monkeypatch):
    """From HALF_RES_FROM pixels on, the turned copies are half the size of the upright one, and a
    head tilted 40 degrees in a large photo is still found and read as on the small one."""
    face, _ = astronaut_face()
    tilted, _ = turned(face, -40.0)
    large = cv2.resize(tilted, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    assert max(tilted.shape[:2]) < detect.FaceDetector.HALF_RES_FROM <= max(large.shape[:2])
    detector = detect.KeypointDetector(face_detector=detect.FaceDetector())
    searched = []
    find_turned = detect.FaceDetector.find_turned
    monkeypatch.setattr(detect.FaceDetector, "find_turned", lambda self, gray, angle, *search:
                        searched.append((angle, gray.shape)) or find_turned(self, gray, angle, *search))
    [small_face] = [f for f in detector.detect(tilted) if abs(f.roll) > 20]
    assert {shape for angle, shape in searched} == {tilted.shape[:2]}
    searched.clear()
    [large_face] = [f for f in detector.detect(large) if abs(f.roll) > 20]
    shapes = {angle: shape for angle, shape in searched}
    assert shapes[0.0] == large.shape[:2]
    half = (large.shape[0] // 2, large.shape[1] // 2)
    assert all(shapes[angle] == half for angle in detect.FaceDetector.ROTATIONS)
    eye_distance = np.linalg.norm(small_face.keypoints[36] - small_face.keypoints[45])
    error = np.linalg.norm(large_face.keypoints / 3 - small_face.keypoints, axis=1).mean()
    assert error < 0.05 * eye_distance


@pytest.mark.parametrize("degrees", [90.0, 180.0])
def test_a_face_the_wrong_way_round_comes_out_right_where_it_is_found(detector, degrees):
    """Rolled 90 or 180 degrees: the default copies (up to 45) do not find it, a detector told to
    look there does, and its keypoints land where the upright ones went."""
    face, _ = astronaut_face()
    [upright] = detector.detect(face)
    tilted, turn = turned(face, degrees)
    # the face's roll is now -degrees (the image turned counter-clockwise): the copy to look in
    looking = detect.KeypointDetector(face_detector=detect.FaceDetector(rotations=(-degrees,)))
    found = [f for f in looking.detect(tilted)
             if abs(face_crop.angle_between(f.roll + degrees - upright.roll, 0.0)) < 20]
    assert len(found) == 1
    expected = face_crop.transform_points(upright.keypoints, turn)
    eye_distance = np.linalg.norm(expected[36] - expected[45])
    assert np.linalg.norm(found[0].keypoints - expected, axis=1).mean() < 0.05 * eye_distance


def test_tracker_follows_a_head_that_tilts(detector):
    """Over 24 frames the head turns from upright to 60 degrees: the same track all the way, its
    crop turning with it, keypoints on the face (the cascade alone loses it past about 20 degrees)."""
    face, _ = astronaut_face()
    [upright] = detector.detect(face)
    tracker = tracking.FaceTracker(detector, fps=30, detect_every=5, smooth=False)
    for i, degrees in enumerate(np.linspace(0, 60, 24)):
        frame, turn = turned(face, degrees)
        [tracked] = [f for f in tracker(frame) if f.track_id == 0]
        expected = face_crop.transform_points(upright.keypoints, turn)
        eye_distance = np.linalg.norm(expected[36] - expected[45])
        assert np.linalg.norm(tracked.keypoints - expected, axis=1).mean() < 0.06 * eye_distance, i
    assert tracker.tracks[0].id == 0 and tracker.tracks[0].angle < -45  # the crop turned with the head


# ---------------------------------------------------------------------------------------------
# The command line.

def test_cli_default_astronaut(tmp_path):
    result = run_cli("--out", tmp_path / "out", "--json", tmp_path / "k.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out_image = tmp_path / "out" / "astronaut.jpg"
    assert str(out_image) in result.stdout
    assert cv2.imread(str(out_image)).shape == (512, 512, 3)
    [record] = read_jsonl(tmp_path / "k.jsonl")
    check_record(record, 512, 512)
    assert len(record["faces"]) >= 1
    x, y, w, h = record["faces"][0]["box"]
    points = np.array(record["faces"][0]["keypoints"])
    assert np.all((points > [x - w / 2, y - h / 2]) & (points < [x + 1.5 * w, y + 1.5 * h]))


def test_cli_given_image_and_no_face_image(tmp_path):
    face, centre = astronaut_face()
    write_rgb(tmp_path / "astro.png", face)
    blank = np.tile(np.linspace(0, 255, 160).astype(np.uint8), (120, 1))
    cv2.imwrite(str(tmp_path / "blank.jpg"), blank)
    result = run_cli("astro.png", "blank.jpg", "--out", "out", "--json", "k.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    astro, empty = read_jsonl(tmp_path / "k.jsonl")
    check_record(astro, 300, 300)
    check_record(empty, 160, 120)
    assert (astro["image"], empty["image"]) == ("astro.png", "blank.jpg")
    assert len(astro["faces"]) == 1 and empty["faces"] == []
    assert np.linalg.norm(box_centre(astro["faces"][0]["box"]) - centre) < 10
    assert (tmp_path / "out" / "astro.png").is_file() and (tmp_path / "out" / "blank.jpg").is_file()


def test_cli_bad_inputs_one_line_each_others_processed(tmp_path):
    face, _ = astronaut_face()
    write_rgb(tmp_path / "good1.png", face)
    write_rgb(tmp_path / "good2.jpg", face)
    jpeg = (tmp_path / "good2.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    png = (tmp_path / "good1.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(png[:len(png) // 2])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "text.jpg").write_text("not a picture either")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x01" * 500)
    bad = ["missing.jpg", "notes.txt", "empty.jpg", "truncated.jpg", "truncated.png", "text.jpg",
           "broken.mp4", "no_such_folder/"]
    result = run_cli("good1.png", *bad, "good2.jpg", "--out", "out", "--json", "k.jsonl", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(bad), result.stderr
    for name, line in zip(bad, lines, strict=True):
        assert name in line, f"{name}: not named in {line!r}"
    records = read_jsonl(tmp_path / "k.jsonl")
    assert [r["image"] for r in records] == ["good1.png", "good2.jpg"]
    assert all(len(r["faces"]) == 1 for r in records)


def test_cli_bad_model_file(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    write_rgb(tmp_path / "a.png", np.zeros((40, 40, 3), np.uint8))
    result = run_cli("a.png", "--model", "bad.pt", "--out", "out", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad.pt" in lines[0], result.stderr


def test_cli_folder_of_gray_rgba_16bit_images(tmp_path):
    """A folder searched recursively; grayscale, RGBA and 16-bit PNGs all give the face."""
    face, centre = astronaut_face()
    bgr = cv2.cvtColor(face, cv2.COLOR_RGB2BGR)
    (tmp_path / "photos" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "photos" / "gray.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(tmp_path / "photos" / "sub" / "rgba.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(tmp_path / "photos" / "sub" / "deep16.png"), bgr.astype(np.uint16) * 257)
    (tmp_path / "photos" / "readme.txt").write_text("ignored: not an image")
    result = run_cli("photos", "--out", "out", "--json", "k.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "k.jsonl")
    assert sorted(r["image"] for r in records) == sorted(
        os.path.join("photos", p) for p in ("gray.png", "sub/rgba.png", "sub/deep16.png"))
    for record in records:
        check_record(record, 300, 300)
        assert len(record["faces"]) == 1, record["image"]
        assert np.linalg.norm(box_centre(record["faces"][0]["box"]) - centre) < 10
    for name in ("gray.png", "sub/rgba.png", "sub/deep16.png"):  # annotated copies mirror the folder
        assert (tmp_path / "out" / "photos" / name).is_file()


def test_cli_video_round_trip(tmp_path):
    face, _ = astronaut_face()
    face = cv2.cvtColor(cv2.resize(face, (240, 240), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (240, 240))
    n_frames = 8
    for i in range(n_frames):
        writer.write(cv2.warpAffine(face, np.float32([[1, 0, i], [0, 1, 0]]), (240, 240),
                                    borderMode=cv2.BORDER_REPLICATE))
    writer.release()
    result = run_cli("clip.mp4", "--out", "out", "--json", "k.jsonl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(tmp_path / "k.jsonl")
    assert len(records) == n_frames
    for i, record in enumerate(records):
        check_record(record, 240, 240, frame=i)
        assert record["image"] == "clip.mp4"
        assert len(record["faces"]) == 1
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == n_frames
    capture.release()


def test_ctrl_c_during_a_video_ends_the_whole_run_and_keeps_what_was_written(tmp_path, monkeypatch):
    face, _ = astronaut_face()
    writer = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 25, (300, 300))
    for _ in range(6):
        writer.write(cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    writer.release()
    write_rgb(tmp_path / "after.png", face)
    frames_seen = []
    track = tracking.FaceTracker.__call__

    def interrupted_on_the_third_frame(self, frame):
        frames_seen.append(1)
        if len(frames_seen) == 3:
            raise KeyboardInterrupt
        return track(self, frame)

    monkeypatch.setattr(tracking.FaceTracker, "__call__", interrupted_on_the_third_frame)
    status = detect.main([str(tmp_path / "clip.mp4"), str(tmp_path / "after.png"), "--out",
                          str(tmp_path / "out"), "--json", str(tmp_path / "k.jsonl"), "--no-flip"])
    assert status == 130
    assert [r.get("frame") for r in read_jsonl(tmp_path / "k.jsonl")] == [0, 1]  # the image never ran
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 2  # a complete file of the frames done
    capture.release()
    assert not (tmp_path / "out" / "after.png").exists()


def test_the_installed_command_names_itself_in_its_errors(tmp_path, monkeypatch, capsys):
    """`facial-keypoints` (the entry point facial_keypoints.detect:main) is not detect.py."""
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "bin" / "facial-keypoints")])
    assert detect.main([str(tmp_path / "absent.png"), "--out", str(tmp_path / "out"), "--workers", "1"]) == 1
    assert capsys.readouterr().err.startswith("facial-keypoints: ")
    with pytest.raises(SystemExit):
        detect.main(["--workers", "0"])
    assert capsys.readouterr().err.startswith("facial-keypoints: --workers 0")
