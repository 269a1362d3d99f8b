"""The benchmark (bench.py, bench_accuracy.py, bench_speed.py): tables, ratios, frames and timing
loops, the report. dlib's pipeline and its offset: test_dlib_baseline.py.

No wall-clock assertions: timing helpers are checked by what they call and count.
"""

import functools
import os
import shutil
import types

import cv2
import numpy as np
import pytest
import torch
from conftest import CSV_FILES, face_keypoints, write_course_dataset, write_training_split

import bench
import bench_accuracy
import bench_speed
import evaluate
from degradations import decode_jpeg, encode_jpeg
from dlib_baseline import DlibPipeline
from facial_keypoints import backends, media
from facial_keypoints.detect import KeypointDetector
from facial_keypoints.media import read_keypoints_csv
from metrics import nme_per_face, summarize
from models import Net, TwoHeadNet, save_model


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
    assert bench_speed.speed_ratio(1.0, 2.5) == "2.50x faster"  # ours takes less time
    assert bench_speed.speed_ratio(3.0, 1.5) == "2.00x slower"
    assert bench_speed.speed_ratio(30.0, 10.0, higher_is_faster=True) == "3.00x faster"  # frames per second
    assert bench_speed.speed_ratio(5.0, 20.0, higher_is_faster=True) == "4.00x slower"


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
    rows = {row[0]: row[1:] for row in bench_accuracy.accuracy_rows(ours, theirs)}
    assert rows["faces found"] == ["2/3", "3/3"]
    expected_nme = 100 * nme_per_face(pred[:2], gt[:2]).mean()
    assert float(rows["NME (%), points 36-45 normalised"][0]) == pytest.approx(expected_nme, abs=0.005)
    assert float(rows["NME (%), points 36-45 normalised"][1]) == 0
    assert float(rows["failure rate @ 10 % (%)"][0]) == pytest.approx(100 / 3, abs=0.005)  # the miss
    assert float(rows["AUC @ 0.08"][0]) == pytest.approx(ours["auc_8"], abs=5e-4)
    assert float(rows["NME eyes (%)"][0]) > float(rows["NME mouth (%)"][0])  # the eyes were moved more
    assert len(rows) == 5 + len(ours["regions"])
    three = bench_accuracy.accuracy_rows(ours, theirs, summarize(pred + 1.0, gt))  # the offset column
    assert [row[:3] for row in three] == bench_accuracy.accuracy_rows(ours, theirs)
    assert {row[0]: row[3] for row in three}["faces found"] == "2/3"


def test_offset_section_states_what_the_numbers_say():
    fit = {"images": 800, "step": 4, "found": 781}
    regions = dict.fromkeys(("jaw", "brows", "nose", "eyes", "mouth"), 4.0)
    ours = {"nme": 4.10, "failure_10": 0.52, "regions": regions}
    raw = {"nme": 6.85, "failure_10": 9.74, "regions": dict.fromkeys(regions, 7.0)}
    worse = {"nme": 5.00, "failure_10": 3.25, "regions": {**regions, "jaw": 5.0, "nose": 4.5}}
    text = " ".join(bench_accuracy.offset_section(fit, ours, raw, worse).split())
    assert "dlib's NME is 5.00 % (raw 6.85 %) against our 4.10 %: ours is lower by 0.90 points" in text
    assert "ours is lower on 2 of the 5 regions" in text
    assert "0.52 % of the faces at 10 % against 3.25 %" in text
    assert "800 training images" in text and "dlib found 781 of the faces" in text and "one row in 4" in text
    better = {**worse, "nme": 3.50}
    text = " ".join(bench_accuracy.offset_section(fit, ours, raw, better).split())
    assert "ours is higher by 0.60 points" in text
    assert "the two are level" in bench_accuracy.offset_section(fit, ours, raw, {**worse, "nme": 4.101})
    assert bench_accuracy.offset_label(fit) == ("dlib + per-point offset fitted on 781 training faces "
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


def test_unseen_sentence_reads_the_models_own_record():
    """Whether the model saw the unseen people is what its metadata says (train.py writes
    trained_on_unseen_people), never a guess from its date or its commands."""
    assert "training saw these people" in bench_accuracy.unseen_sentence({"trained_on_unseen_people": True})
    assert "never saw these people" in bench_accuracy.unseen_sentence({"trained_on_unseen_people": False})
    guessable = {"command": "python train.py --unseen", "created": "2020-01-01 00:00:00"}
    for meta in ({}, guessable, {"trained_on_unseen_people": None}):
        assert bench_accuracy.unseen_sentence(meta) == ("The model's metadata does not say whether it saw "
                                                         "these people.")


SAW_THEM = {"arch": "net", "trained_on_unseen_people": True}


def test_unseen_table_shows_the_short_rows_and_the_offset_note():
    pred, gt = hand_made_predictions()
    columns = {bench_accuracy.OURS: summarize(pred, gt), bench_accuracy.DLIB: summarize(gt, gt)}
    text = bench.unseen_table(columns, SAW_THEM)
    assert text.startswith(bench_accuracy.unseen_sentence(SAW_THEM) + "\n\n| unseen people")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[4:]]
    assert [row[0] for row in rows] == list(bench_accuracy.SHORT_ROWS)
    assert rows[2][1:] == ["2/3", "3/3"] and "offset" not in text
    fitted = bench.unseen_table(columns, {}, {"images": 800})
    assert fitted.endswith("fitted on training images of other people.")


def test_degraded_rows_give_the_change_against_clean():
    def metrics(nme, failure_10, found):
        return {"nme": nme, "failure_10": failure_10, "found": found, "faces": 770}

    clean = metrics(4.13, 0.78, 768), metrics(6.90, 9.50, 760)
    results = {"blur": (metrics(4.50, 1.04, 767), metrics(8.15, 12.00, 700)),
               "half": (metrics(3.90, 0.52, 769), metrics(6.90, 9.10, 740))}
    rows = bench_accuracy.degraded_rows(clean, results)
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


def test_make_clip_frames_follow_the_face():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (200, 160, 3), dtype=np.uint8)
    keypoints = face_keypoints(center=(80, 100), scale=0.9)
    nose = keypoints[30].round().astype(int)
    cv2.circle(image, tuple(nose), 3, (255, 255, 255), -1)  # a white dot on the nose tip
    frames, points = bench_speed.make_clip(image, keypoints, n_frames=5)
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
    decoded = decode_jpeg(encode_jpeg(image, bench_speed.JPEG_QUALITY))
    assert decoded.shape == image.shape
    assert decoded[..., 0].min() > 240 and decoded[..., 2].max() < 15


def test_interleaved_medians_calls_each_function_in_turn():
    order = []
    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    medians = bench_speed.interleaved_medians(calls, repeats=7, warmup=2, block=3)
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

    result = bench_speed.frames_per_second(clips, {"ours": every_other, "none": lambda b: [0] * len(b)})
    assert seen == [2, 4, 6]  # a two-frame warm-up, then every clip once
    fps, share = result["ours"]
    assert fps > 0 and share == pytest.approx(5 / 10)
    assert result["none"][1] == 0


def test_subset_csv_keeps_the_first_rows(tiny_dataset, tmp_path):
    folder, counts = tiny_dataset
    csv_file = os.path.join(folder, "test_frames_keypoints.csv")
    assert evaluate.subset_csv(csv_file, 0, str(tmp_path)) == csv_file
    names, points = read_keypoints_csv(evaluate.subset_csv(csv_file, 1, str(tmp_path)), arrays=True)
    all_names, all_points = read_keypoints_csv(csv_file, arrays=True)
    assert len(names) == 1 and counts["test"] == len(all_names) == 2
    assert names[0] == all_names[0]
    np.testing.assert_allclose(points[0], all_points[0])


def names_in(csv_file):
    return read_keypoints_csv(csv_file, arrays=True)[0]


def test_subset_csv_spaced_takes_every_kth_row(tmp_path):
    root = str(tmp_path / "data")
    write_course_dataset(root, n_train=10)
    training, test = (os.path.join(root, CSV_FILES[split]) for split in ("training", "test"))
    names = names_in(training)
    spaced = evaluate.subset_csv(training, 3, str(tmp_path), spaced=True)
    assert names_in(spaced) == names[0:9:3]  # k = 10 // 3
    assert names_in(evaluate.subset_csv(training, 4, str(tmp_path), spaced=True)) == names[0:8:2]
    assert len(names_in(evaluate.subset_csv(training, 50, str(tmp_path), spaced=True))) == 10
    first = evaluate.subset_csv(test, 3, str(tmp_path))  # the same folder and limit: another file
    assert first != evaluate.subset_csv(training, 3, str(tmp_path)) and os.path.isfile(spaced)


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

    monkeypatch.setattr(bench_speed.subprocess, "run", fake_run)
    assert bench_speed.full_training_seconds() >= 0
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
    models, notes = bench_speed.forward_models(shipped_pt, threads=1)
    assert sorted(models) == ["int8", "onnx", "torch"] and notes == []
    assert all(m.meta["input_size"] == 112 for m in models.values())
    other = tmp_path / "keypoints_model.pt"
    shutil.copy(shipped_pt, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # the same network, another file: its exports are not these
    shutil.copy(backends.DEFAULT_ONNX_MODEL, tmp_path)
    (tmp_path / "keypoints_model.int8.onnx").write_bytes(b"not a model")
    models, notes = bench_speed.forward_models(str(other), threads=1)
    assert sorted(models) == ["torch"]
    assert "another model file" in notes[0] and "not a readable ONNX model" in notes[1]
    (tmp_path / "keypoints_model.onnx").unlink()
    assert "no such file" in bench_speed.forward_models(str(other), threads=1)[1][0]


def test_speed_rows_show_the_rows_measured():
    latency = {"cnn_torch": 2e-3, "cnn_flip": 4e-3, "face": 8e-3, "dlib": 1e-3}
    detection = {"ours": 0.02, "haar": 0.04, "dlib": 0.08, "dlib_gray": 0.06}
    fps = {"ours": (16.0, 1.0), "ours_video": (80.0, 1.0), "dlib": (8.0, 0.99)}
    training = {"throughput": ({1: 190.0}, 64)}
    labels = [row[0] for row in bench_speed.speed_rows(latency, detection, fps, training)]
    assert not any("onnxruntime" in label for label in labels)
    rows = bench_speed.speed_rows({**latency, "cnn_onnx": 0.5e-3}, detection, fps, training)
    [onnx_row] = [row for row in rows if "onnxruntime" in row[0]]
    assert onnx_row[1:] == ["0.50 ms", "1.00 ms", "2.00x faster"]
    assert len(rows) == len(labels) + 1
    rows = bench_speed.speed_rows({**latency, "face_accurate": 20e-3}, detection, fps, training)
    steps = {row[0]: row[1:] for row in rows if "step from a detector box" in row[0]}
    assert steps == {
        "landmarks per face: default step from a detector box": ["8.00 ms", "1.00 ms", "8.00x slower"],
        "landmarks per face: --accurate step from a detector box": ["20.00 ms", "1.00 ms", "20.00x slower"]}
    folder = {"images": 770, "ours, 1 worker": 5.0, "ours, 2 workers": 8.5, "dlib": 4.0}
    rows = bench_speed.speed_rows(latency, detection, fps, training, folder)
    folder_rows = [row for row in rows if row[0].startswith("folder of 770")]
    assert [row[1:] for row in folder_rows] == [
        ["5.0 images/s", "4.0 images/s", "1.25x faster"],
        ["8.5 images/s", "4.0 images/s", "2.12x faster, 1.70x 1 worker"]]


def test_landmark_latency_times_the_default_and_the_accurate_step(monkeypatch):
    """The two per-face rows call the two detectors' own step on the same box, and the forward
    rows each model in `models`."""
    box, rect = np.array([10.0, 10.0, 40.0, 40.0]), "dlib rect"
    calls = []

    class Step:
        def __init__(self, name):
            self.name, self.backend = name, f"{name} backend"

        def crops(self, gray, boxes):
            return np.zeros((1, 1, 8, 8), np.float32), None

        def keypoints_for_boxes(self, gray, boxes):
            assert gray.ndim == 2 and boxes == [box]
            calls.append(self.name)

    frame = np.zeros((60, 60, 3), np.uint8)
    monkeypatch.setattr(bench_speed, "first_face_found_by_both", lambda *args: (frame, box, rect))
    monkeypatch.setattr(bench_speed, "predict_normalized",
                        lambda model, crop, flip: calls.append((model, flip)))
    dlib = types.SimpleNamespace(keypoints=lambda image, found: calls.append(found))
    medians = bench_speed.landmark_latency(Step("default"), Step("accurate"), dlib, clips=[], repeats=3,
                                           models={"torch": "torch model"})
    assert set(medians) == {"cnn_torch", "cnn_flip", "face", "face_accurate", "dlib"}
    warmup = 5
    assert calls.count("default") == calls.count("accurate") == calls.count(rect) == warmup + 3
    assert calls.count(("torch model", False)) == calls.count(("default backend", True)) == warmup + 3


def test_accuracy_table_has_an_accurate_column_only_when_measured(tmp_path):
    pred, gt = hand_made_predictions()
    ours, theirs, accurate = summarize(pred, gt), summarize(gt, gt), summarize(pred + 0.5, gt)
    columns = bench_accuracy.accuracy_columns(ours, theirs, None, None)
    assert list(columns) == [bench_accuracy.OURS, bench_accuracy.DLIB]
    columns = bench_accuracy.accuracy_columns(ours, theirs, None, None, accurate)
    assert list(columns) == [bench_accuracy.OURS, bench_accuracy.OURS_ACCURATE, bench_accuracy.DLIB]
    assert columns[bench_accuracy.OURS_ACCURATE] is accurate
    fit = {"found": 9}
    fitted = bench_accuracy.accuracy_columns(ours, theirs, theirs, fit, accurate)
    assert list(fitted)[:2] == [bench_accuracy.OURS, bench_accuracy.OURS_ACCURATE] and len(fitted) == 4
    text = written_report(tmp_path, {"accuracy": "ACCURACY TABLE", "speed": "SPEED TABLE"})
    said = f'"{bench_accuracy.OURS_ACCURATE}" column is `python evaluate.py --accurate`'
    assert said in " ".join(text.split())


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


# ---------------------------------------------------------------------------------------------
# The in-the-wild row: ours (its 300w head) and dlib on the wild validation photos' faces.

WILD_FACE = face_keypoints(center=(55, 62), scale=0.7)  # every made-up wild face's labels


def write_wild_set(root):
    """A tiny in-the-wild set in fkp-wild's layout (`<source>-<photo>_<face>.jpg`): two faces of a
    photo of the committed validation split, one of another photo."""
    val_photo = sorted(media.wild_val_photos())[0]
    rng = np.random.default_rng(0)
    names = [f"{val_photo}_1.jpg", "lfpw-0001_0.jpg", f"{val_photo}_2.jpg"]
    return write_training_split(str(root), [(name, rng.integers(0, 120, (120, 110, 3), dtype=np.uint8),
                                             WILD_FACE) for name in names])


def test_wild_val_csv_holds_the_validation_photos_faces_or_is_none(tmp_path, monkeypatch):
    wild = write_wild_set(tmp_path / "wild")
    monkeypatch.setenv("FKP_WILD", wild)
    csv_file, images = bench_accuracy.wild_val_csv(str(tmp_path))
    names, keypoints = read_keypoints_csv(csv_file, images, arrays=True)
    val_photo = sorted(media.wild_val_photos())[0]
    assert names == [f"{val_photo}_1.jpg", f"{val_photo}_2.jpg"] and images == os.path.join(wild, "training")
    np.testing.assert_allclose(keypoints[1], WILD_FACE)
    monkeypatch.setenv("FKP_WILD", str(tmp_path / "no-wild"))
    assert bench_accuracy.wild_val_csv(str(tmp_path)) is None


def stand_in_dlib():
    """dlib's pipeline with stand-ins: a box on every image's made-up face, its labels 1 px to the right."""
    rect = types.SimpleNamespace(left=lambda: 20, top=lambda: 30, width=lambda: 71, height=lambda: 71)
    points = [types.SimpleNamespace(x=x + 1.0, y=y) for x, y in WILD_FACE]
    return DlibPipeline(hog=lambda image, upsample: [rect],
                        predictor=lambda image, found: types.SimpleNamespace(parts=lambda: points))


@pytest.mark.parametrize("two_heads", [True, False])
def test_the_wild_table_scores_the_300w_head_and_says_the_row_flatters_dlib(two_heads, tmp_path, monkeypatch):
    """Ours reads its 300w head where the model has one (a course-only Net: its course head, said
    so); dlib runs on the same faces; the text says dlib's training saw these photos."""
    monkeypatch.setenv("FKP_WILD", write_wild_set(tmp_path / "wild"))
    torch.manual_seed(0)
    if two_heads:
        model, meta = TwoHeadNet(48, widths=[4, 8, 8, 16, 16]), {"arch": "twohead-net"}
    else:
        model, meta = Net(48, widths=[4, 8, 8, 16, 16]), {"arch": "net"}
    pt = str(tmp_path / "m.pt")
    save_model(model, pt, {**meta, "input_size": 48, "model_options": {"widths": [4, 8, 8, 16, 16]},
                           "crop_margin": 1.3, "crop_shift": 0.1})
    args = types.SimpleNamespace(model=pt, backend="torch", limit=0)
    text = bench.wild_table(args, stand_in_dlib(), str(tmp_path), KeypointDetector(pt, backend="torch"))
    head = "300w" if two_heads else "course"
    assert text.startswith(f"Ours reads its {head} head") and bench_accuracy.WILD_FLATTERS_DLIB in text
    assert ("no 300w head" in text) != two_heads
    rows = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:4]]
            for row in text.splitlines() if row.startswith("|")}
    header = rows["wild validation photos, pipeline"]
    assert header == [f"{bench_accuracy.OURS}, {head} head", bench_accuracy.DLIB]
    assert rows["faces found"][0].endswith("/2") and rows["faces found"][1] == "2/2"  # the validation photo's
    one_px = 100 / np.linalg.norm(WILD_FACE[36] - WILD_FACE[45])
    assert float(rows["NME (%), points 36-45 normalised"][1]) == pytest.approx(one_px, abs=0.01)


def test_without_a_wild_set_the_wild_row_is_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FKP_WILD", str(tmp_path / "no-wild"))
    text = bench.wild_table(types.SimpleNamespace(limit=0), None, str(tmp_path), None)
    assert "no in-the-wild set" in text and "skipped" in text and "FKP_WILD" in text
    assert "no in-the-wild set at" in capsys.readouterr().out


def test_report_holds_the_wild_section_beside_the_accuracy_table(tmp_path):
    tables = {"accuracy": "ACCURACY TABLE", "speed": "SPEED TABLE"}
    assert "### In-the-wild photos" not in written_report(tmp_path, tables)
    text = written_report(tmp_path, {**tables, "unseen": "UNSEEN TABLE", "wild": "WILD TABLE"})
    assert text.index("UNSEEN TABLE") < text.index("### In-the-wild photos") < text.index("WILD TABLE") \
        < text.index("## Speed")
    assert f"The faces of the {len(media.wild_val_photos())} photos" in " ".join(text.split())


def test_the_timings_run_every_library_on_the_threads_the_table_names(monkeypatch):
    monkeypatch.setattr(backends, "default_threads", backends.default_threads)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # limit_threads sets it: put back as it was after the test
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    try:
        backends.limit_threads(1)  # what bench.run sets for its timings
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (1, 1)
        options = backends.OnnxModel(backends.DEFAULT_ONNX_MODEL).model.get_session_options()
        assert options.intra_op_num_threads == 1
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv2_threads)
