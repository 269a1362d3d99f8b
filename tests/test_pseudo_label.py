"""pseudo_label.py with stand-ins for dlib's detector and predictor: a face is kept when the readings
of the photo and of its mirror image agree, labelled with their mean, one a person by default; its
.pts file imports with get_data.py --pts; bad input is one line."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import get_data
import pseudo_label
from dlib_baseline import DlibPipeline
from facial_keypoints.face_crop import FLIP_PERMUTATION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 120


def symmetric_face():
    """68 points mirror-symmetric about x = (SIZE - 1) / 2 (point i mirrors onto FLIP_PERMUTATION[i]),
    the outer eye corners 39 px apart."""
    points = np.random.default_rng(0).uniform(35, 85, (68, 2))
    for i, j in enumerate(FLIP_PERMUTATION):
        if i < j:
            points[j] = SIZE - 1 - points[i, 0], points[i, 1]
        elif i == j:
            points[i, 0] = (SIZE - 1) / 2
    points[36], points[45] = (40, 50), (SIZE - 1 - 40, 50)
    return points


BASE = symmetric_face()


class Rect:
    """dlib.rectangle's calls: Rect(left, top, right, bottom), .left() ... .center()."""

    class Point:
        def __init__(self, x, y):
            self.x, self.y = x, y

    def __init__(self, left, top, right, bottom):
        self.box = left, top, right, bottom

    def left(self):
        return self.box[0]

    def top(self):
        return self.box[1]

    def right(self):
        return self.box[2]

    def bottom(self):
        return self.box[3]

    def center(self):
        return self.Point((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


class Shape:
    def __init__(self, points):
        self.points = points

    def parts(self):
        return [Rect.Point(x, y) for x, y in self.points]


def hog(image, upsample):
    """One face box in the middle; an off-centre one too, which the labeller must not pick."""
    return [Rect(5, 5, 30, 30), Rect(30, 30, 89, 89)]


def predictor(image, rect):
    """The symmetric face shifted right by a tenth of the photo's top-left pixel value (in px): read
    on the photo and on its mirror image, it lands twice that shift apart."""
    assert rect.box == (30, 30, 89, 89)  # the central box, which mirrors onto itself
    return Shape(BASE + [image[0, 0] / 10, 0])


def write_photos(folder, pixels):
    os.makedirs(folder)
    for name, pixel in pixels.items():
        image = np.full((SIZE, SIZE), 128, np.uint8)
        image[0, 0] = image[0, -1] = pixel  # the same in the mirror image
        assert cv2.imwrite(os.path.join(folder, name), image)


def test_faces_whose_two_readings_agree_are_kept_labelled_with_their_mean(tmp_path):
    photos = tmp_path / "lfw"
    # PNG: the pixel that sets the shift survives; 50 -> 10 px apart (26 % NME), 1 -> 0.2 px (0.5 %)
    write_photos(photos, {"Ann_Lee_0001.png": 50, "Ann_Lee_0002.png": 0, "Ann_Lee_0003.png": 0,
                          "Bo_Li_0001.png": 1, "Cy_0001.png": 0})
    out = tmp_path / "pts"
    pipeline = DlibPipeline(hog=hog, predictor=predictor)
    photos_seen, found, kept, disagreements = pseudo_label.label_folder(str(photos), str(out), pipeline,
                                                                        progress=False)
    # Ann_Lee_0001's readings disagree (dropped); her 0002 is her one face, 0003 is not read
    assert (photos_seen, found, kept) == (5, 4, 3)
    assert sorted(n for n in os.listdir(out) if n.endswith(".pts")) == [
        "Ann_Lee_0002.pts", "Bo_Li_0001.pts", "Cy_0001.pts"]
    assert disagreements[0] > pseudo_label.MAX_DISAGREEMENT >= disagreements[1:].max()
    # The label is the mean of the two readings: the shift cancels, the symmetric face is left
    assert np.allclose(get_data.read_pts(str(out / "Bo_Li_0001.pts")), BASE, atol=1e-3)
    assert os.path.realpath(out / "Bo_Li_0001.png") == str(photos / "Bo_Li_0001.png")
    # every face: all of Ann Lee's that agree
    _, _, every, _ = pseudo_label.label_folder(str(photos), str(tmp_path / "all"), pipeline, per_person=0,
                                               progress=False)
    assert every == 4
    # and get_data.py imports them as the lfw source of an in-the-wild set
    dest = get_data.get_wild(str(out), "lfw", str(tmp_path / "wild"), progress=False)
    names, keypoints = get_data.verify_wild(dest)
    assert names == ["lfw-Ann_Lee_0002_0.jpg", "lfw-Bo_Li_0001_0.jpg", "lfw-Cy_0001_0.jpg"]
    assert keypoints.shape == (3, 68, 2)


@pytest.mark.parametrize("args, line", [
    (["missing", "--out", "o"], "pseudo_label.py: missing: no such folder"),
    (["lfw", "--out", "lfw/o"], "pseudo_label.py: --out lfw/o: inside the photos' folder; choose another "
                                "--out"),
    (["lfw", "--out", "file.txt"], "pseudo_label.py: --out file.txt: exists and is not an empty folder "
                                   "(labels of another run would mix with these); choose another --out"),
    (["lfw", "--out", "full"], "pseudo_label.py: --out full: exists and is not an empty folder (labels of "
                               "another run would mix with these); choose another --out"),
])
def test_bad_input_is_one_line(tmp_path, args, line):
    (tmp_path / "lfw").mkdir()
    (tmp_path / "file.txt").write_text("keep me")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "Old_0001.pts").write_text("an earlier run's")
    done = subprocess.run([sys.executable, os.path.join(ROOT, "pseudo_label.py"), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.strip() == line, done.stderr
    assert (tmp_path / "file.txt").read_text() == "keep me" and not (tmp_path / "o").exists()
    assert os.listdir(tmp_path / "full") == ["Old_0001.pts"]


def test_a_negative_per_person_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "pseudo_label.py"), str(tmp_path), "--out",
                           str(tmp_path / "o"), "--per-person", "-1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == ("pseudo_label.py: --per-person -1: a whole number, 0 or "
                                                    "more (--help lists the options)\n")
    assert not (tmp_path / "o").exists()
