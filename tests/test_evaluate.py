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
