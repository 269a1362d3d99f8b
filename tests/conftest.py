"""Shared fixtures: the real dataset (skip or fail when absent) and tiny synthetic ones; helpers."""

import ast
import os

import cv2
import numpy as np
import pytest

from facial_keypoints import media

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV_FILES = {"training": "training_frames_keypoints.csv", "test": "test_frames_keypoints.csv"}


def holds_dataset(folder):
    return all(os.path.isfile(os.path.join(folder, csv)) and os.path.isdir(os.path.join(folder, split))
               for split, csv in CSV_FILES.items())


@pytest.fixture(scope="session")
def dataset_dir():
    """The real dataset's folder (media.data_dir()).

    Absent: the test is skipped with the reason shown in pytest's summary, or fails when
    FKP_REQUIRE_DATA=1 (CI), so a CI run never silently skips the tests that need the data.
    """
    folder = media.data_dir()
    if not holds_dataset(folder):
        reason = (f"dataset not found at {os.path.abspath(folder)} (set FKP_DATA or run `make data`)")
        if os.environ.get("FKP_REQUIRE_DATA") == "1":
            pytest.fail(f"FKP_REQUIRE_DATA=1 but {reason}")
        pytest.skip(reason)
    return folder


FACE_CROP = (slice(0, 300), slice(100, 400))  # the astronaut's head and shoulders in data.astronaut()


def turned(image, degrees):
    """The image turned counter-clockwise about its centre, and the 2x3 matrix that did it."""
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REPLICATE), turn


def box_centre(box):
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2])


def face_keypoints(center=(100.0, 110.0), scale=1.0):
    """68 distinct points in the rough iBUG layout (jaw, brows, nose, eyes, mouth), mirror-symmetric
    about x = center[0] under face_crop.FLIP_PERMUTATION; at scale 1 they span about 90 x 100 px
    and no two are closer than 4 px."""
    jaw = [(-45 + 90 * t, 10 + 40 * np.sin(np.pi * t) ** 0.8 + 10 * (1 - abs(2 * t - 1)))
           for t in np.linspace(0, 1, 17)]
    brows = [(x, -28 - 6 * np.sin(np.pi * (abs(x) - 8) / 30)) for x in
             (-38, -31, -24, -17, -10, 10, 17, 24, 31, 38)]
    nose = [(0, -18), (0, -10), (0, -2), (0, 6), (-10, 13), (-5, 15), (0, 16), (5, 15), (10, 13)]
    left_eye = [(-32, -10), (-27, -14), (-20, -14), (-14, -10), (-20, -6), (-27, -6)]
    right_eye = [(-x, y) for x, y in (left_eye[3], left_eye[2], left_eye[1], left_eye[0],
                                      left_eye[5], left_eye[4])]
    outer_mouth = [(-22, 30), (-14, 26), (-6, 24), (0, 25), (6, 24), (14, 26), (22, 30),
                   (14, 37), (6, 40), (0, 41), (-6, 40), (-14, 37)]
    inner_mouth = [(-16, 31), (-5, 29), (0, 29), (5, 29), (16, 31), (5, 34), (0, 35), (-5, 34)]
    points = np.array(jaw + brows + nose + left_eye + right_eye + outer_mouth + inner_mouth, dtype=np.float64)
    assert points.shape == (68, 2)
    return points * scale + np.asarray(center)


def write_image(path, size, rng):
    """A small random-textured RGB image (any content will do for file-level tests)."""
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image), path


def write_course_dataset(root, n_train=3, n_test=2, extra_test=1, seed=0):
    """A tiny dataset in the course archive's layout at root; returns the expected row counts.

    Like the course archive, test/ holds `extra_test` images that its CSV does not list.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    header = "," + ",".join(str(i) for i in range(136))
    for split, n, extra in (("training", n_train, 0), ("test", n_test, extra_test)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        lines = [header]
        for i in range(n + extra):
            name = f"Person_{split}_{i:02d}.jpg"
            write_image(os.path.join(root, split, name), (150 + 10 * i, 140), rng)
            if i < n:
                pts = face_keypoints(center=(70 + i, 75), scale=0.8)
                lines.append(name + "," + ",".join(f"{v:.1f}" for v in pts.ravel()))
        with open(os.path.join(root, CSV_FILES[split]), "w") as f:
            f.write("\n".join(lines) + "\n")
    return {"training": n_train, "test": n_test}


def write_training_split(root, samples):
    """A training/ folder and its CSV at root from (name, image, (68, 2) keypoints) samples."""
    os.makedirs(os.path.join(root, "training"))
    header = "," + ",".join(str(i) for i in range(136))
    lines = [header]
    for name, image, keypoints in samples:
        assert cv2.imwrite(os.path.join(root, "training", name), image), name
        lines.append(name + "," + ",".join(repr(float(v)) for v in np.ravel(keypoints)))
    with open(os.path.join(root, CSV_FILES["training"]), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


@pytest.fixture
def tiny_dataset(tmp_path):
    """A tiny course-layout dataset in a temporary folder: (folder, expected row counts)."""
    root = tmp_path / "tiny-data"
    return str(root), write_course_dataset(str(root))


def project_modules_in(path, package=None):
    """The modules the Python file at `path` imports, at the top or inside a function, by their
    dotted names: `from facial_keypoints import media` and `from .media import X` (in `package`)
    are both "facial_keypoints.media"; `import models` is "models"."""
    with open(path) as f:
        tree = ast.parse(f.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = f"{package}.{node.module or ''}".rstrip(".") if node.level else node.module
            folder = os.path.join(ROOT, *module.split("."))
            submodules = {alias.name for alias in node.names
                          if os.path.isfile(os.path.join(folder, alias.name + ".py"))}
            names |= {f"{module}.{name}" for name in submodules}
            if len(submodules) < len(node.names):  # names defined by the module itself
                names.add(module)
    return names
