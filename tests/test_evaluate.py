"""Evaluation metrics on hand-made predictions give known values."""

import numpy as np
import pytest

import evaluate
import metrics


def face(interocular=10.0):
    """68 points with the outer eye corners (36, 45) `interocular` apart."""
    points = np.zeros((68, 2))
    points[:, 0] = np.linspace(0, interocular, 68)
    points[36], points[45] = [0, 0], [interocular, 0]
    return points


def test_nme_is_mean_point_error_over_outer_eye_corner_distance():
    gt = np.stack([face(10), face(20)])
    pred = gt.copy()
    pred[0] += [1, 0]               # every point 1 px off on a 10 px face -> 10 %
    pred[1, :34] += [0, 4]          # half the points 4 px off on a 20 px face -> 10 %
    assert metrics.nme_per_face(pred, gt) == pytest.approx([0.10, 0.10])


def test_summary_counts_misses_as_failures_but_not_in_nme():
    gt = np.stack([face(10)] * 4)
    pred = gt.copy()
    pred[0] += [0.5, 0]             # 5 %
    pred[1] += [0.9, 0]             # 9 %: fails at 8 %, not at 10 %
    pred[2] += [1.5, 0]             # 15 %: fails at both
    pred[3] = np.nan                # detector miss
    m = metrics.summarize(pred, gt)
    assert m["found"] == 3 and m["faces"] == 4
    assert m["nme"] == pytest.approx((5 + 9 + 15) / 3)
    assert m["failure_8"] == pytest.approx(75.0)
    assert m["failure_10"] == pytest.approx(50.0)
    assert m["regions"]["jaw"] == pytest.approx(m["nme"])  # a uniform shift is the same everywhere


def test_auc_of_known_error_distributions():
    assert metrics.ced_auc(np.zeros(10)) == pytest.approx(1.0, abs=1e-3)
    assert metrics.ced_auc(np.full(10, np.inf)) == 0.0
    # errors spread uniformly over [0, 8 %]: the curve is the diagonal, area 1/2
    assert metrics.ced_auc(np.linspace(0, 0.08, 10001)) == pytest.approx(0.5, abs=2e-3)


def test_matching_box_picks_the_detection_on_the_labelled_face():
    gt = face(40) + [100, 100]
    gt[:, 1] += np.linspace(-20, 20, 68)
    boxes = np.array([[0, 0, 30, 30], [90, 70, 60, 60], [300, 300, 50, 50]], dtype=float)
    assert (evaluate.matching_box(boxes, gt) == boxes[1]).all()
    assert evaluate.matching_box(boxes[[0, 2]], gt) is None
    assert evaluate.matching_box(np.zeros((0, 4)), gt) is None


def test_ced_plot_is_written(tmp_path):
    path = tmp_path / "ced.png"
    evaluate.plot_ced({"a": np.array([0.01, 0.05, np.inf])}, str(path))
    assert path.stat().st_size > 1000


def test_no_face_found_is_said_in_words_without_warnings(tmp_path, capsys):
    """Images where the detector finds nothing: no 'NME nan%', no numpy warnings, no plot."""
    import warnings

    import cv2
    from conftest import face_keypoints

    (tmp_path / "images").mkdir()
    rows = []
    for i in range(2):
        cv2.imwrite(str(tmp_path / "images" / f"blank_{i}.png"), np.full((160, 160), 128, np.uint8))
        points = face_keypoints(center=(80, 80), scale=0.8).ravel()
        rows.append(f"blank_{i}.png," + ",".join(f"{v:.1f}" for v in points))
    (tmp_path / "blank.csv").write_text("," + ",".join(map(str, range(136))) + "\n" + "\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = evaluate.main(["--csv", str(tmp_path / "blank.csv"), "--images", str(tmp_path / "images"),
                           "--plot", str(tmp_path / "ced.png")])
    out = capsys.readouterr().out
    assert m["found"] == 0 and "no face found in 2 labelled images" in out and "nan" not in out
    assert not (tmp_path / "ced.png").exists()


# ---------------------------------------------------------------------------------------------
# Degraded copies (--degrade): each degradation on a synthetic RGB image with a white dot.

DOT = (31.5, 51.5)  # (x, y) centre of the 4 x 4 white square, pixel centres at whole coordinates


def dot_image(height=120, width=160, seed=0):
    """RGB uint8: a reddish left half, a bluish right half, mild random texture, and a white
    4 x 4 square centred on DOT; with 68 keypoints, point 0 on the dot."""
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.float64)
    image[:, : width // 2] = (150, 60, 40)
    image[:, width // 2:] = (40, 60, 150)
    image += rng.uniform(-15, 15, image.shape)
    x, y = int(DOT[0] - 1.5), int(DOT[1] - 1.5)
    image[y:y + 4, x:x + 4] = 255
    from conftest import face_keypoints
    keypoints = face_keypoints(center=(width / 2, height / 2), scale=0.5)
    keypoints[0] = DOT
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), keypoints


def dot_centre(image, near, radius=8):
    """(x, y) centre of the bright dot in the window of `radius` px about `near`: the centroid of
    the gray levels above 160 (the textured background stays below)."""
    gray = image.astype(np.float64) @ [0.299, 0.587, 0.114]
    x0, y0 = int(round(near[0])) - radius, int(round(near[1])) - radius
    window = np.clip(gray[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1] - 160, 0, None)
    ys, xs = np.mgrid[: window.shape[0], : window.shape[1]]
    return np.array([(xs * window).sum() / window.sum() + x0, (ys * window).sum() / window.sum() + y0])


def laplacian_variance(image):
    import cv2
    return cv2.Laplacian(image.astype(np.float64) @ [0.299, 0.587, 0.114], cv2.CV_64F).var()


@pytest.mark.parametrize("name", sorted(evaluate.DEGRADATIONS))
def test_every_degradation_keeps_uint8_rgb(name):
    image, keypoints = dot_image()
    out, points = evaluate.degraded(image.copy(), keypoints.copy(), name, index=3)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert points.shape == (68, 2)
    half = out.shape[1] // 2  # channel order kept: the left half stays red, the right half blue
    assert out[:, :half - 4, 0].mean() > out[:, :half - 4, 2].mean() + 20 * evaluate.DARK_GAIN
    assert out[:, half + 4:, 2].mean() > out[:, half + 4:, 0].mean() + 20 * evaluate.DARK_GAIN


def test_no_degradation_is_the_image_itself():
    image, keypoints = dot_image()
    out, points = evaluate.degraded(image, keypoints, None, index=0)
    assert out is image and points is keypoints


def test_half_halves_the_image_and_the_keypoints_onto_the_dot():
    image, keypoints = dot_image()
    small, points = evaluate.degraded(image, keypoints, "half", index=0)
    assert small.shape == (60, 80, 3)
    assert points == pytest.approx((keypoints + 0.5) / 2 - 0.5)
    # the dot lands on the halved keypoint; plain x / 2 would be a quarter pixel off
    assert dot_centre(small, points[0], radius=4) == pytest.approx(points[0], abs=0.05)
    assert dot_centre(image, DOT) == pytest.approx(DOT, abs=0.05)


def test_half_of_an_odd_size_still_maps_the_dot():
    image, keypoints = dot_image(height=121, width=163)
    small, points = evaluate.degraded(image, keypoints, "half", index=0)
    assert abs(small.shape[0] - 60.5) <= 0.5 and abs(small.shape[1] - 81.5) <= 0.5
    assert dot_centre(small, points[0], radius=4) == pytest.approx(points[0], abs=0.05)


def test_blur_removes_fine_detail_but_keeps_the_mean_and_the_keypoints():
    image, keypoints = dot_image()
    out, points = evaluate.degraded(image, keypoints, "blur", index=0)
    assert laplacian_variance(out) < 0.1 * laplacian_variance(image)
    assert out.mean() == pytest.approx(image.mean(), abs=1.0)
    assert (points == keypoints).all()


def test_dark_scales_the_mean_and_is_repeatable_per_index():
    image, keypoints = dot_image()
    out, points = evaluate.degraded(image, keypoints, "dark", index=5)
    assert out.mean() == pytest.approx(evaluate.DARK_GAIN * image.mean(), rel=0.02)
    noise = out.astype(np.float64) - evaluate.DARK_GAIN * image
    assert noise.std() == pytest.approx(evaluate.DARK_NOISE, rel=0.1)  # rounding adds a little
    assert (out == evaluate.degraded(image, keypoints, "dark", index=5)[0]).all()
    assert (out != evaluate.degraded(image, keypoints, "dark", index=6)[0]).any()
    assert (points == keypoints).all()


def test_jpeg_changes_the_pixels_but_not_the_dot():
    image, keypoints = dot_image()
    out, points = evaluate.degraded(image, keypoints, "jpeg", index=0)
    assert np.abs(out.astype(int) - image).mean() > 3  # quality 10: visibly different
    assert dot_centre(out, DOT) == pytest.approx(DOT, abs=1.0)
    assert (points == keypoints).all()


def test_unknown_degradation_is_refused():
    image, keypoints = dot_image()
    with pytest.raises(ValueError, match="sepia"):
        evaluate.degraded(image, keypoints, "sepia", index=0)


def test_unknown_degrade_option_is_a_one_line_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--degrade", "sepia"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "--degrade" in err and "sepia" in err


def test_help_states_the_degradation_parameters(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    for name, note in evaluate.DEGRADATION_NOTES.items():
        assert f"{name}: {note}" in out
    assert "sigma 2 px" in out and "JPEG quality 10" in out and "x0.3" in out


class RecordingDetector:
    """Stands in for KeypointDetector in evaluate.Protocol: keeps the images it is given and
    predicts the box's centre for every point."""

    def __init__(self):
        self.images, self.checks = [], []

    def keypoints_for_boxes(self, image, boxes, angles, first=None, check=True):
        self.images.append(image)
        self.checks.append(check)
        x, y, w, h = boxes[0]
        return np.full((1, 68, 2), [x + w / 2, y + h / 2])


def test_predict_dataset_rotates_then_degrades_each_image(tiny_dataset):
    import os

    from facial_keypoints.media import load_image, to_gray

    folder, _ = tiny_dataset
    csv_file, images = os.path.join(folder, "test_frames_keypoints.csv"), os.path.join(folder, "test")
    plain, turned = RecordingDetector(), RecordingDetector()
    pipeline = evaluate.Protocol(plain, "labelled-box").labelled_face
    _, gt = evaluate.predict_dataset(pipeline, csv_file, images, progress=False)
    pipeline = evaluate.Protocol(turned, "labelled-box").labelled_face
    _, gt_turned = evaluate.predict_dataset(pipeline, csv_file, images, progress=False, rotate=30,
                                            degrade="half")
    names, _ = evaluate.read_keypoints_csv(csv_file, images, arrays=True)
    for i, name in enumerate(names):
        rgb = load_image(os.path.join(images, name))
        expected, points = evaluate.degraded(*evaluate.rotated(rgb, gt[i], 30), "half", i)
        assert (plain.images[i] == to_gray(rgb)).all()  # gray, full size, without a degradation
        assert (turned.images[i] == to_gray(expected)).all()
        assert gt_turned[i] == pytest.approx(points)
    # the labelled box holds a face: no face check, which only the pipeline protocol makes
    assert plain.checks == turned.checks == [False] * len(names)


def test_predict_dataset_runs_any_pipeline_and_counts_its_misses(tiny_dataset):
    """The one loop for every pipeline (ours, dlib's): it gets the RGB image and its labels, and a
    None answer is a miss (NaN row)."""
    import os

    folder, _ = tiny_dataset
    csv_file, images = os.path.join(folder, "test_frames_keypoints.csv"), os.path.join(folder, "test")
    seen = []

    def first_only(image, labels):
        seen.append(image.shape)
        return labels + 1.0 if len(seen) == 1 else None

    pred, gt = evaluate.predict_dataset(first_only, csv_file, images, progress=False)
    assert [len(shape) for shape in seen] == [3, 3] and pred.shape == gt.shape == (2, 68, 2)
    np.testing.assert_allclose(pred[0], gt[0] + 1.0)
    assert np.isnan(pred[1]).all()
    assert metrics.summarize(pred, gt)["found"] == 1


def test_an_unknown_protocol_is_refused():
    with pytest.raises(ValueError, match="unknown protocol 'guess'"):
        evaluate.Protocol(RecordingDetector(), "guess")


def test_report_line_names_rotation_and_degradation(tmp_path, capsys):
    """The blank images of the no-face test: the summary line says what was done to them."""
    import cv2
    from conftest import face_keypoints

    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "blank.png"), np.full((160, 160), 128, np.uint8))
    points = face_keypoints(center=(80, 80), scale=0.8).ravel()
    (tmp_path / "blank.csv").write_text("blank.png," + ",".join(f"{v:.1f}" for v in points) + "\n")
    evaluate.main(["--csv", str(tmp_path / "blank.csv"), "--images", str(tmp_path / "images"),
                   "--rotate", "10", "--degrade", "dark"])
    out = capsys.readouterr().out
    assert f"pipeline, rotated 10 degrees, dark ({evaluate.DEGRADATION_NOTES['dark']}): no face found" in out


def test_worst_faces_lists_misses_first_then_the_largest_errors():
    m = {"names": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "errors": np.array([0.02, np.inf, 0.5, 0.01])}
    assert evaluate.worst_faces(m, 3) == ["  b.jpg: missed", "  c.jpg: NME 50.0%", "  a.jpg: NME 2.0%"]
    assert evaluate.worst_faces(m, 10)[-1] == "  d.jpg: NME 1.0%"


def test_worst_needs_a_count_of_zero_or_more(capsys):
    with pytest.raises(SystemExit):
        evaluate.main(["--worst", "-1"])
    assert "--worst -1" in capsys.readouterr().err


def test_no_face_check_and_accurate_build_the_detector_so(monkeypatch):
    built = []

    class Stop(Exception):
        pass

    def detector(*args, **kwargs):
        built.append(kwargs)
        raise Stop

    monkeypatch.setattr(evaluate, "KeypointDetector", detector)
    for argv in ([], ["--no-face-check"], ["--accurate"]):
        with pytest.raises(Stop):
            evaluate.main(argv)
    assert built[0]["max_disagreement"] > 0 and built[1]["max_disagreement"] is None
    assert built[0]["accurate"] is built[1]["accurate"] is False
    assert built[2]["accurate"] is True and built[2]["max_disagreement"] > 0
