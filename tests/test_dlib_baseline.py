"""dlib_baseline.py: dlib's pipeline on stand-ins through evaluate.predict_dataset, the per-point
offset fit, and the real dlib where it is installed.

Tests that need the real dlib skip with the reason when it is not installed (requirements-bench.txt).
"""

import importlib.util
import os
import warnings

import numpy as np
import pytest
from conftest import CSV_FILES, face_keypoints, write_course_dataset

import dlib_baseline
import evaluate
from facial_keypoints.media import load_image, read_keypoints_csv
from metrics import summarize

DLIB_MISSING = "dlib is not installed (pip install -r requirements-bench.txt)"
MODELS_MISSING = "face_recognition_models is not installed (pip install -r requirements-bench.txt)"


class FakeRect:
    """Stands in for dlib.rectangle: inclusive corners, width = right - left + 1."""

    def __init__(self, left, top, right, bottom):
        self.l, self.t, self.r, self.b = left, top, right, bottom

    def left(self):
        return self.l

    def top(self):
        return self.t

    def width(self):
        return self.r - self.l + 1

    def height(self):
        return self.b - self.t + 1


class FakeShape:
    def __init__(self, points):
        self.points = points

    def parts(self):
        return [type("Point", (), {"x": float(x), "y": float(y)}) for x, y in self.points]


def turn(degrees):
    """The 2x2 rotation by `degrees` in image coordinates (x right, y down)."""
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def mean_face():
    """conftest's face moved into its own frame by hand (not with face_frame): the eye centres
    (means of points 36-41 and 42-47) at (-0.5, 0) and (0.5, 0)."""
    points = face_keypoints()
    first, second = points[36:42].mean(0), points[42:48].mean(0)
    assert first[1] == second[1] and first[0] < second[0]  # level eyes, the first on the image's left
    return (points - (first + second) / 2) / (second[0] - first[0])


def posed(face, degrees, scale, shift):
    """A face in frame units turned, scaled and moved into an image: its frame is exactly this pose."""
    return scale * face @ turn(degrees).T + np.asarray(shift)


def synthetic_faces(offset, n, rng):
    """`n` predicted faces of different shapes (noise off the eyes, so each frame is its pose) in
    random poses, and labels = the prediction + `offset` expressed in that face's frame."""
    predicted, labels = [], []
    for _ in range(n):
        face = mean_face()
        face[np.r_[0:36, 48:68]] += rng.normal(0, 0.03, (56, 2))
        pose = rng.uniform(-180, 180), rng.uniform(20, 200), rng.uniform(-500, 500, 2)
        predicted.append(posed(face, *pose))
        labels.append(posed(face + offset, *pose))
    return predicted, labels


def test_face_frame_reports_the_pose():
    origin, rotation, scale = dlib_baseline.face_frame(posed(mean_face(), 30.0, 80.0, (200.0, 150.0)))
    np.testing.assert_allclose(origin, [200, 150], atol=1e-9)
    np.testing.assert_allclose(rotation, turn(30.0), atol=1e-12)
    assert np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0])) == pytest.approx(30.0)
    assert scale == pytest.approx(80.0)
    origin, rotation, scale = dlib_baseline.face_frame(posed(mean_face(), 0.0, 1.0, (0.0, 0.0)))
    np.testing.assert_allclose(rotation, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(origin, [0, 0], atol=1e-12)


def test_fit_point_offsets_recovers_a_known_offset():
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 0.05, (68, 2))  # the eyes too: the labels' frames are not the predictions'
    predicted, labels = synthetic_faces(offset, 25, rng)
    fitted = dlib_baseline.fit_point_offsets(predicted, labels)
    assert fitted.shape == (68, 2)
    np.testing.assert_allclose(fitted, offset, rtol=0, atol=1e-9)
    pixels = np.mean([lab - pred for pred, lab in zip(predicted, labels, strict=True)], axis=0)
    assert np.abs(pixels - offset).max() > 0.1  # without each face's frame the answer is far off


def test_apply_point_offsets_maps_a_new_face_onto_its_labels():
    rng = np.random.default_rng(2)
    offset = rng.normal(0, 0.05, (68, 2))
    fitted = dlib_baseline.fit_point_offsets(*synthetic_faces(offset, 10, rng))
    face = mean_face()
    pose = -70.0, 37.0, (310.0, 90.0)  # a pose none of the fitted faces had
    predicted, labels = posed(face, *pose), posed(face + offset, *pose)
    moved = dlib_baseline.apply_point_offsets(predicted, fitted)
    np.testing.assert_allclose(moved, labels, rtol=0, atol=1e-9)
    np.testing.assert_allclose(dlib_baseline.apply_point_offsets(predicted, np.zeros((68, 2))), predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(dlib_baseline.apply_point_offsets(np.full((68, 2), np.nan), fitted)).all()  # a miss


def test_matching_rect_picks_the_labelled_face():
    keypoints = face_keypoints(center=(100, 110))
    rects = [FakeRect(300, 300, 360, 360), FakeRect(50, 50, 150, 160)]
    boxes = np.array([dlib_baseline.rect_to_box(r) for r in rects])
    assert dlib_baseline.matching_rect(rects, boxes, keypoints) is rects[1]
    assert dlib_baseline.matching_rect(rects[:1], boxes[:1], keypoints) is None
    assert dlib_baseline.matching_rect([], np.zeros((0, 4)), keypoints) is None


def test_dlib_predict_dataset_on_stand_ins_counts_misses(tiny_dataset):
    """The dlib protocol with stand-in detector and predictor: the matching face goes to the
    predictor, a miss stays NaN, and summarize sees exactly that."""
    folder, _ = tiny_dataset
    labels = face_keypoints(center=(70, 75), scale=0.8)  # the first test image's face (conftest)
    face, elsewhere = FakeRect(20, 20, 120, 130), FakeRect(100, 110, 135, 145)
    calls = []

    def hog(image, upsample):
        assert upsample == dlib_baseline.DLIB_UPSAMPLE
        return [elsewhere, face] if image.shape[0] == 150 else []  # the second image: no face

    def predictor(image, rect):
        calls.append(rect)
        return FakeShape(labels + [2.0, 0.0])

    pipeline = dlib_baseline.DlibPipeline(hog=hog, predictor=predictor)
    pred, gt = dlib_baseline.predict_with_dlib(pipeline, os.path.join(folder, "test_frames_keypoints.csv"),
                                          os.path.join(folder, "test"), progress=False)
    assert calls == [face]
    np.testing.assert_allclose(pred[0], labels + [2.0, 0.0])
    assert np.isnan(pred[1]).all()
    m = summarize(pred, gt)
    assert (m["found"], m["faces"]) == (1, 2)
    # the CSV holds the labels to 0.1 px: the error is 2 px over the eye-corner distance, nearly
    assert m["nme"] == pytest.approx(100 * 2.0 / np.linalg.norm(labels[36] - labels[45]), rel=1e-3)
    assert m["failure_10"] == pytest.approx(50.0)


@pytest.mark.parametrize("rotate, degrade", [(0.0, "half"), (15.0, "dark")])
def test_dlib_predict_dataset_passes_degrade_through(tiny_dataset, rotate, degrade):
    """With `degrade`, the shape predictor gets evaluate.predict_dataset's image: turned, then
    evaluate.degraded on the RGB image with the row's index (dark seeds its noise with it)."""
    folder, _ = tiny_dataset
    csv_file, images_dir = os.path.join(folder, "test_frames_keypoints.csv"), os.path.join(folder, "test")
    names, labels = read_keypoints_csv(csv_file, arrays=True)
    got = []

    def hog(image, upsample):  # conftest's faces sit in the middle of their images
        h, w = image.shape[:2]
        return [FakeRect(w // 4, h // 4, 3 * w // 4, 3 * h // 4)]

    def predictor(image, rect):
        got.append(image)
        return FakeShape(face_keypoints())

    pipeline = dlib_baseline.DlibPipeline(hog=hog, predictor=predictor)
    _, gt = dlib_baseline.predict_with_dlib(pipeline, csv_file, images_dir, False, rotate, degrade=degrade)
    assert len(got) == len(names) == 2
    for i, name in enumerate(names):
        image, points = evaluate.rotated(load_image(os.path.join(images_dir, name)), labels[i], rotate)
        image, points = evaluate.degraded(image, points, degrade, i)
        assert got[i].ndim == 3 and got[i].shape == image.shape
        np.testing.assert_array_equal(got[i], image)
        np.testing.assert_allclose(gt[i], points)
    if degrade == "half":
        assert got[0].shape[:2] == (75, 70)  # conftest's first image is 150 x 140
    dlib_baseline.predict_with_dlib(pipeline, csv_file, images_dir, False)
    np.testing.assert_array_equal(got[-1], load_image(os.path.join(images_dir, names[-1])))


def test_fit_dlib_offsets_on_stand_ins(tmp_path):
    """The offset stage with stand-in detector and predictor: every k-th training row, the matching
    face to the predictor, misses left out of the fit and counted."""
    root = str(tmp_path / "data")
    write_course_dataset(root, n_train=7)
    csv_file, images_dir = os.path.join(root, CSV_FILES["training"]), os.path.join(root, "training")
    seen = []

    def hog(image, upsample):
        seen.append(index := (image.shape[0] - 150) // 10)  # conftest's image i is 150 + 10 i high
        return [] if index == 2 else [FakeRect(30, 40, 110, 120)]

    def predictor(image, rect):  # 2 px right of conftest's face in image i
        index = (image.shape[0] - 150) // 10
        return FakeShape(face_keypoints(center=(70 + index, 75), scale=0.8) + [2.0, 0.0])

    pipeline = dlib_baseline.DlibPipeline(hog=hog, predictor=predictor)
    offsets, fit = dlib_baseline.fit_dlib_offsets(pipeline, csv_file, images_dir, 3, str(tmp_path))
    assert seen == [0, 2, 4] and fit == {"images": 3, "step": 2, "found": 2}
    points = face_keypoints()
    eye_distance = 0.8 * np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))  # the frame's unit
    expected = np.tile([-2.0 / eye_distance, 0.0], (68, 1))  # the CSV rounds the labels to 0.1 px
    np.testing.assert_allclose(offsets, expected, atol=0.06 / eye_distance)
    never = dlib_baseline.DlibPipeline(hog=lambda image, upsample: [], predictor=predictor)
    with pytest.raises(dlib_baseline.DataError, match="no offset to fit"):
        dlib_baseline.fit_dlib_offsets(never, csv_file, images_dir, 3, str(tmp_path))


def test_fit_dlib_offsets_leaves_out_the_unseen_people(tmp_path, monkeypatch):
    """The offset is never fitted on the people both pipelines are scored on as unseen."""
    root = str(tmp_path / "data")
    write_course_dataset(root, n_train=4)  # every image shows "Person_training"
    csv_file, images_dir = os.path.join(root, CSV_FILES["training"]), os.path.join(root, "training")
    asked = []

    def hog(image, upsample):
        asked.append(image)
        return [FakeRect(30, 40, 110, 120)]

    face = FakeShape(face_keypoints(center=(70, 75)))
    pipeline = dlib_baseline.DlibPipeline(hog=hog, predictor=lambda image, rect: face)
    monkeypatch.setattr(dlib_baseline, "unseen_people", lambda: {"Person_training"})
    with pytest.raises(dlib_baseline.DataError) as error:
        dlib_baseline.fit_dlib_offsets(pipeline, csv_file, images_dir, 3, str(tmp_path))
    assert asked == [], str(error.value)
    monkeypatch.setattr(dlib_baseline, "unseen_people", lambda: {"Someone_else"})
    assert dlib_baseline.fit_dlib_offsets(pipeline, csv_file, images_dir, 4, str(tmp_path))[1]["found"] == 4


def test_dlib_pipeline_detect_returns_boxes_and_points():
    points = face_keypoints()
    pipeline = dlib_baseline.DlibPipeline(hog=lambda image, up: [FakeRect(40, 50, 159, 169)],
                                  predictor=lambda image, rect: FakeShape(points))
    (box, keypoints), = pipeline.detect(np.zeros((240, 320), np.uint8))
    np.testing.assert_array_equal(box, [40, 50, 120, 120])
    np.testing.assert_array_equal(keypoints, points)


def test_real_dlib_types_convert():
    dlib = pytest.importorskip("dlib", reason=DLIB_MISSING, exc_type=ImportError)
    rect = dlib.rectangle(10, 20, 59, 89)
    np.testing.assert_array_equal(dlib_baseline.rect_to_box(rect), [10, 20, 50, 70])
    points = face_keypoints().round()
    shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in points])
    np.testing.assert_array_equal(dlib_baseline.shape_to_points(shape), points)


def test_real_dlib_finds_the_astronaut():
    pytest.importorskip("dlib", reason=DLIB_MISSING, exc_type=ImportError)
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(MODELS_MISSING)
    from skimage import data
    image = data.astronaut()
    faces = dlib_baseline.DlibPipeline().detect(image)
    face_centre = (220, 130)  # Eileen Collins' face in scikit-image's 512x512 photo
    found = [(box, points) for box, points in faces
             if box[0] < face_centre[0] < box[0] + box[2] and box[1] < face_centre[1] < box[1] + box[3]]
    assert len(found) == 1
    (x, y, w, h), keypoints = found[0]
    assert keypoints.shape == (68, 2)
    assert keypoints[36, 0] < keypoints[45, 0]  # outer eye corners: image-left, then image-right
    assert (np.abs(keypoints.mean(0) - [x + w / 2, y + h / 2]) < [w / 4, h / 4]).all()


def test_dlib_model_path_names_the_68_point_file():
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(MODELS_MISSING)
    path = dlib_baseline.dlib_model_path()
    assert os.path.basename(path) == "shape_predictor_68_face_landmarks.dat" and os.path.isfile(path)
