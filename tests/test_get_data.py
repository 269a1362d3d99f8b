"""get_data.py: download from a local HTTP server, copy from a folder or zip, verify, never leave
half a dataset behind; import made-up sets in the 300-W layout with fkp-wild's crop rule; the
committed in-the-wild validation split."""

import filecmp
import functools
import http.server
import os
import re
import subprocess
import sys
import threading
import zipfile

import cv2
import numpy as np
import pytest
from conftest import write_course_dataset

import get_data
from facial_keypoints import media


@pytest.fixture
def source(tmp_path):
    """A tiny dataset in the course layout: (folder, expected row counts)."""
    root = tmp_path / "source"
    return str(root), write_course_dataset(str(root), n_train=3, n_test=2, extra_test=1)


def make_zip(folder, zip_path, prefix=""):
    """Zip a folder, its contents under `prefix` (the course zip may nest them, e.g. data/)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                path = os.path.join(root, name)
                archive.write(path, os.path.join(prefix, os.path.relpath(path, folder)))
        archive.writestr("__MACOSX/._training_frames_keypoints.csv", b"mac metadata")
    return str(zip_path)


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1 (a free port); yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www
    server.shutdown()
    server.server_close()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def same_tree(a, b):
    """True when folders a and b hold the same files with the same bytes."""
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(a, d), os.path.join(b, d))
                                               for d in comparison.common_dirs)


def leftovers(dest):
    """Anything get_data left beside dest other than dest itself (temporary folders)."""
    parent = os.path.dirname(dest)
    return [n for n in os.listdir(parent) if n.startswith(f".{os.path.basename(dest)}")]


def run_cli(*args):
    """get_data.main(args); returns the SystemExit message, or None when it succeeded."""
    try:
        get_data.main([*args, "--no-progress"])
    except SystemExit as e:
        return str(e.code)
    return None


@pytest.mark.parametrize("prefix", ["", "data"])
def test_download_from_local_server(source, http_server, tmp_path, prefix, capsys):
    folder, counts = source
    url, www = http_server
    make_zip(folder, www / "train-test-data.zip", prefix)
    dest = str(tmp_path / "out" / "data")
    assert get_data.get_data(url=f"{url}/train-test-data.zip", dest=dest, expected_rows=counts,
                             progress=False) == dest
    assert same_tree(folder, dest), "the downloaded dataset differs from the source"
    assert not os.path.exists(os.path.join(dest, "__MACOSX"))
    assert leftovers(dest) == []
    assert "dataset ready" in capsys.readouterr().out

    # A second run leaves the complete dataset alone.
    mtime = os.stat(os.path.join(dest, "training_frames_keypoints.csv")).st_mtime_ns
    get_data.get_data(url=f"{url}/missing.zip", dest=dest, expected_rows=counts, progress=False)
    assert "left alone" in capsys.readouterr().out
    assert os.stat(os.path.join(dest, "training_frames_keypoints.csv")).st_mtime_ns == mtime


def test_download_via_cli_with_progress_bar(source, http_server, tmp_path, capsys):
    folder, counts = source
    url, www = http_server
    make_zip(folder, www / "archive.zip")
    dest = str(tmp_path / "data")
    get_data.main(["--url", f"{url}/archive.zip", "--dest", dest,
                   "--training-rows", str(counts["training"]), "--test-rows", str(counts["test"])])
    assert same_tree(folder, dest)
    assert "downloading archive.zip" in capsys.readouterr().err  # tqdm's bar


def test_http_error_is_one_line(http_server, tmp_path):
    url, _ = http_server
    dest = str(tmp_path / "data")
    message = run_cli("--url", f"{url}/nope.zip", "--dest", dest)
    assert message.startswith("get_data.py: ") and "404" in message and "\n" not in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_corrupt_zip_fails_and_leaves_nothing(source, http_server, tmp_path):
    folder, counts = source
    url, www = http_server
    zip_path = make_zip(folder, www / "archive.zip")
    with zipfile.ZipFile(zip_path) as archive:  # flip bytes inside the first member's data
        info = archive.infolist()[0]
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 5
    with open(zip_path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    dest = str(tmp_path / "data")
    message = run_cli("--url", f"{url}/archive.zip", "--dest", dest,
                      "--training-rows", str(counts["training"]), "--test-rows", str(counts["test"]))
    assert message is not None and "corrupt zip" in message, message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_not_a_zip_fails_and_leaves_nothing(tmp_path):
    fake = tmp_path / "train-test-data.zip"
    fake.write_bytes(b"<html>Access denied</html>")
    dest = str(tmp_path / "data")
    message = run_cli("--from", str(fake), "--dest", dest)
    assert message is not None and "train-test-data.zip" in message and "corrupt zip" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_missing_image_fails_and_leaves_nothing(source, http_server, tmp_path):
    folder, counts = source
    url, www = http_server
    os.remove(os.path.join(folder, "training", "Person_training_01.jpg"))
    make_zip(folder, www / "archive.zip")
    dest = str(tmp_path / "data")
    message = run_cli("--url", f"{url}/archive.zip", "--dest", dest,
                      "--training-rows", str(counts["training"]), "--test-rows", str(counts["test"]))
    assert message is not None and "training/Person_training_01.jpg" in message and "missing" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_wrong_row_count_fails(source, tmp_path):
    folder, counts = source
    dest = str(tmp_path / "data")
    message = run_cli("--from", folder, "--dest", dest, "--training-rows", "3462", "--test-rows", "770")
    assert message is not None and "training_frames_keypoints.csv has 3 rows, expected 3462" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_from_folder_and_from_zip(source, tmp_path):
    folder, counts = source
    rows = ["--training-rows", str(counts["training"]), "--test-rows", str(counts["test"])]
    (tmp_path / "source" / "README.md").write_text("not part of the layout")
    assert run_cli("--from", folder, "--dest", str(tmp_path / "a"), *rows) is None
    assert sorted(os.listdir(tmp_path / "a")) == ["test", "test_frames_keypoints.csv", "training",
                                                  "training_frames_keypoints.csv"]
    assert same_tree(os.path.join(folder, "training"), str(tmp_path / "a" / "training"))
    assert same_tree(os.path.join(folder, "test"), str(tmp_path / "a" / "test"))

    zip_path = make_zip(folder, tmp_path / "course.zip", prefix="data")
    assert run_cli("--from", zip_path, "--dest", str(tmp_path / "b"), *rows) is None
    assert same_tree(folder, str(tmp_path / "b"))


def test_from_read_only_folder_gives_a_writable_copy(source, tmp_path):
    folder, counts = source
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
    dest = str(tmp_path / "data")
    get_data.get_data(folder, dest=dest, expected_rows=counts, progress=False)
    assert os.access(os.path.join(dest, "training_frames_keypoints.csv"), os.W_OK)


def test_fills_an_empty_dest_but_refuses_a_foreign_one(source, tmp_path):
    folder, counts = source
    empty = tmp_path / "empty"
    empty.mkdir()
    get_data.get_data(folder, dest=str(empty), expected_rows=counts, progress=False)
    assert same_tree(os.path.join(folder, "training"), str(empty / "training"))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(get_data.DataError, match="not the course dataset"):
        get_data.get_data(folder, dest=str(foreign), expected_rows=counts, progress=False)
    assert os.listdir(foreign) == ["notes.txt"]


def test_incomplete_existing_dataset_is_reported_not_touched(source, tmp_path):
    folder, counts = source
    dest = str(tmp_path / "data")
    get_data.get_data(folder, dest=dest, expected_rows=counts, progress=False)
    os.remove(os.path.join(dest, "test", "Person_test_00.jpg"))
    with pytest.raises(get_data.DataError, match="test/Person_test_00.jpg .*incomplete"):
        get_data.get_data(folder, dest=dest, expected_rows=counts, progress=False)
    assert not os.path.exists(os.path.join(dest, "test", "Person_test_00.jpg"))


def test_interrupted_run_leaves_nothing(source, tmp_path, monkeypatch):
    folder, counts = source
    dest = str(tmp_path / "data")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(get_data, "verify", interrupt)  # Ctrl-C after the copy, before the rename
    message = run_cli("--from", folder, "--dest", dest)
    assert message is not None and "interrupted" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_missing_source_is_one_line_without_traceback(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "get_data.py")
    result = subprocess.run([sys.executable, script, "--from", str(tmp_path / "nowhere"),
                             "--dest", str(tmp_path / "data")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"get_data.py: {tmp_path / 'nowhere'}: no such file or folder"
    assert not os.path.exists(tmp_path / "data")


def test_a_killed_run_leaves_a_work_folder_the_next_run_removes(source, tmp_path):
    """SIGKILL leaves no chance to clean up: the next run removes what the killed one left."""
    folder, counts = source
    dest = tmp_path / "data"
    stale = tmp_path / ".data-abc123.tmp"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "half.csv").write_text("a killed copy")
    keep = tmp_path / ".other-abc.tmp"  # another dataset's work folder is not ours to remove
    keep.mkdir()
    get_data.get_data(folder, dest=str(dest), expected_rows=counts, progress=False)
    assert not stale.exists() and keep.exists()
    assert leftovers(str(dest)) == []


# ---------------------------------------------------------------------------------------------
# --pts: 68-point sets in the 300-W layout into the in-the-wild set.

def grid_points(left, top, width, height):
    """68 made-up points on a 9 x 8 grid spanning (left, top, width, height): spaced far enough
    apart that each drawn point stays its own blob in the crop."""
    xs, ys = np.meshgrid(np.linspace(left, left + width, 9), np.linspace(top, top + height, 8))
    return np.c_[xs.ravel(), ys.ravel()][:68]


def draw_points(size, points):
    """A black photo (height, width) with a small bright Gaussian blob centred on each point."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w), np.float64)
    for x, y in points:
        image = np.maximum(image, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 1.5 ** 2)))
    return cv2.cvtColor((image * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR)


def write_pts(path, points, header=True):
    """A .pts file of points (0-based here), written 1-based as 300-W's are."""
    lines = [f"{x + 1:.3f} {y + 1:.3f}" for x, y in points]
    if header:
        lines = ["version: 1", f"n_points: {len(points)}", "{", *lines, "}"]
    path.write_text("\n".join(lines) + "\n")


# Made-up faces: (.pts stem, photo file, photo size (h, w), their points (0-based), header or not).
FACES = [
    ("100040721_1", "100040721_1.png", (700, 760), grid_points(260, 250, 220, 180), True),  # shrunk
    ("1051618982_1", "1051618982.jpg", (400, 500), grid_points(300, 180, 80, 70), False),  # as is
    ("1051618982_2", "1051618982.jpg", (400, 500), grid_points(6, 8, 90, 75), True),  # at the edge
    ("image_0003", "image_0003.png", (300, 320), grid_points(120, 120, 70, 60), False),  # LFPW's names
]


@pytest.fixture
def pts_dir(tmp_path):
    """A tiny set in the 300-W layout: HELEN's (a photo per face), AFW's (a photo with two
    faces, one at the photo's top left corner) and LFPW's names."""
    folder = tmp_path / "300w"
    folder.mkdir()
    photos = {}
    for stem, photo, size, points, header in FACES:
        write_pts(folder / f"{stem}.pts", points, header)
        photos.setdefault(photo, (size, []))[1].append(points)
    for photo, (size, faces) in photos.items():
        quality = [cv2.IMWRITE_JPEG_QUALITY, 100] if photo.endswith(".jpg") else []
        assert cv2.imwrite(str(folder / photo), draw_points(size, np.concatenate(faces)), quality)
    return folder


def blob_centre(gray, x, y, radius=4):
    """The brightness-weighted centre of the blob around (x, y)."""
    x0, y0 = max(0, round(x) - radius), max(0, round(y) - radius)
    window = gray[y0:round(y) + radius + 1, x0:round(x) + radius + 1].astype(np.float64)
    window = np.clip(window - 20, 0, None)  # JPEG's faint ringing is no part of the blob
    ys, xs = np.mgrid[0:window.shape[0], 0:window.shape[1]]
    return np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum() + (x0, y0)


def test_pts_with_and_without_header_count_pixels_from_one(tmp_path):
    points = grid_points(10.5, 20.25, 80, 70)
    write_pts(tmp_path / "a.pts", points, header=True)
    write_pts(tmp_path / "b.pts", points, header=False)
    for name in ("a.pts", "b.pts"):
        np.testing.assert_allclose(get_data.read_pts(str(tmp_path / name)), points, atol=1e-9)


def test_face_names_say_source_photo_and_face():
    assert get_data.face_name("helen", "100040721_2") == "helen-100040721_2.jpg"
    assert get_data.face_name("afw", "1051618982_1") == "afw-1051618982_1.jpg"
    assert get_data.face_name("lfpw", "image_0001") == "lfpw-0001_0.jpg"  # as fkp-wild names it
    assert get_data.face_name("ibug", "image_003_1") == "ibug-003_1.jpg"
    assert media.identity_of(get_data.face_name("afw", "1051618982_12")) == "afw-1051618982"


def test_import_a_made_up_set(pts_dir, tmp_path, capsys):
    dest = str(tmp_path / "wild")
    assert get_data.get_wild(str(pts_dir), "made", dest, progress=False) == dest
    assert "4 made faces imported" in capsys.readouterr().out
    assert leftovers(dest) == []
    names, keypoints = media.read_keypoints_csv(os.path.join(dest, "training_frames_keypoints.csv"),
                                                os.path.join(dest, "training"), arrays=True)
    expected = {"made-100040721_1.jpg", "made-1051618982_1.jpg", "made-1051618982_2.jpg", "made-0003_0.jpg"}
    assert len(names) == len(expected) and set(names) == expected
    faces = dict(zip(names, keypoints, strict=True))
    for stem, _, _, points, _ in FACES:
        name = get_data.face_name("made", stem)
        with open(os.path.join(dest, "training", name), "rb") as f:
            assert f.read(2) == b"\xff\xd8", f"{name} is not a JPEG"
        crop = cv2.imread(os.path.join(dest, "training", name), cv2.IMREAD_GRAYSCALE)
        h, w = crop.shape
        kp = faces[name]
        assert (kp >= 0).all() and (kp[:, 0] <= w - 1).all() and (kp[:, 1] <= h - 1).all(), name
        centres = np.array([blob_centre(crop, x, y) for x, y in kp])
        assert np.abs(centres - kp).max() < 0.1, f"{name}: keypoints off the drawn points"
        box = np.ptp(kp, axis=0)
        # never enlarged; shrunk to MAX_BOX_SIDE on the box's longer side when larger
        scale = min(1, get_data.MAX_BOX_SIDE / np.ptp(points, axis=0).max())
        np.testing.assert_allclose(box, np.ptp(points, axis=0) * scale, rtol=0.01)
        where = np.r_[kp.min(axis=0) / (w, h), kp.max(axis=0) / (w, h)]
        rule = get_data.BOX_IN_CROP.ravel()
        if stem == "1051618982_2":  # clamped at the photo's left and top: the crop starts there and
            # ends where the rule puts its right and bottom edges
            np.testing.assert_allclose(kp.min(axis=0), (points.min(axis=0) + 0.5) * scale - 0.5, atol=0.01)
            size = np.ptp(points, axis=0) / (rule[2:] - rule[:2])
            np.testing.assert_allclose((w, h), (points.min(axis=0) + (1 - rule[:2]) * size) * scale, atol=1)
            assert (where[:2] < rule[:2] - 0.1).all()
        else:  # where the course's frames have the box, to a pixel
            assert np.abs(where - rule).max() < 1.5 / min(w, h), (name, where)


def test_a_second_source_joins_the_set_and_a_held_source_is_left_alone(pts_dir, tmp_path, capsys):
    dest = str(tmp_path / "wild")
    get_data.get_wild(str(pts_dir), "one", dest, progress=False)
    csv_file = os.path.join(dest, "training_frames_keypoints.csv")
    first = media.read_keypoints_csv(csv_file)
    assert run_cli("--pts", str(pts_dir), "--source", "two", "--dest", dest) is None
    both = media.read_keypoints_csv(csv_file, os.path.join(dest, "training"))
    assert len(both) == 8 and both["image"].str.startswith("two-").sum() == 4
    one = both[both["image"].str.startswith("one-")].reset_index(drop=True)
    assert one.equals(first), "the faces already there changed"
    assert leftovers(dest) == []

    mtime = os.stat(csv_file).st_mtime_ns
    get_data.get_wild(str(tmp_path / "gone"), "two", dest, progress=False)
    assert "already holds 4 two faces; left alone" in capsys.readouterr().out
    assert os.stat(csv_file).st_mtime_ns == mtime


def break_pts(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("problem, expected", [
    ("short", "100040721_1.pts: 67 points, expected 68"),
    ("not a number", "1051618982_1.pts: line 5: '341.000 oops' is not a point (x y)"),
    ("n_points", "100040721_1.pts: n_points: 66, expected 68"),
    ("no photo", "lonely_1.pts: no photo beside it"),
    ("unreadable photo", "image_0003.png: not a readable image"),
    ("outside", "image_0003.pts: its points lie outside the photo"),
])
def test_bad_input_is_one_line_naming_the_file_and_leaves_the_set_as_it_was(pts_dir, tmp_path,
                                                                           problem, expected):
    dest = tmp_path / "wild"
    get_data.get_wild(str(pts_dir), "old", str(dest), progress=False)  # a set already there
    before = sorted(os.listdir(dest / "training")), (dest / "training_frames_keypoints.csv").read_bytes()
    lines = (pts_dir / "100040721_1.pts").read_text().splitlines()
    if problem == "short":
        break_pts(pts_dir / "100040721_1.pts", "\n".join(lines[:-2] + ["}"]))
    elif problem == "not a number":
        text = (pts_dir / "1051618982_1.pts").read_text().splitlines()
        text[4] = text[4].split()[0] + " oops"
        break_pts(pts_dir / "1051618982_1.pts", "\n".join(text))
    elif problem == "n_points":
        break_pts(pts_dir / "100040721_1.pts", "\n".join(lines).replace("n_points: 68", "n_points: 66"))
    elif problem == "no photo":
        write_pts(pts_dir / "lonely_1.pts", grid_points(10, 10, 50, 50))
    elif problem == "unreadable photo":
        (pts_dir / "image_0003.png").write_bytes(b"not an image")
    else:
        write_pts(pts_dir / "image_0003.pts", grid_points(2000, 2000, 50, 50))
    message = run_cli("--pts", str(pts_dir), "--source", "new", "--dest", str(dest))
    assert message is not None and message.startswith("get_data.py: ") and "\n" not in message
    assert expected in message and str(pts_dir) in message, message
    after = sorted(os.listdir(dest / "training")), (dest / "training_frames_keypoints.csv").read_bytes()
    assert after == before and leftovers(str(dest)) == []


def test_pts_command_line_mistakes_are_one_line(pts_dir, tmp_path, capsys):
    for args in (["--pts", str(pts_dir)], ["--source", "lfpw"], ["--pts", str(pts_dir), "--source", "LFPW_1"],
                 ["--pts", str(pts_dir), "--from", str(pts_dir), "--source", "lfpw"]):
        with pytest.raises(SystemExit) as exit_info:
            get_data.main(args)
        assert exit_info.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    dest = str(tmp_path / "w")
    nowhere = str(tmp_path / "nowhere")
    message = run_cli("--pts", nowhere, "--source", "x", "--dest", dest)
    assert message == f"get_data.py: {nowhere}: no such folder"
    message = run_cli("--pts", str(tmp_path), "--source", "x", "--dest", dest)
    assert message.startswith(f"get_data.py: {tmp_path}: no .pts files (expected the 300-W layout")


def test_the_course_dataset_is_never_taken_for_a_wild_set(source, pts_dir):
    folder, _ = source
    before = sorted(os.listdir(os.path.join(folder, "training")))
    with pytest.raises(get_data.DataError, match="holds the course dataset"):
        get_data.get_wild(str(pts_dir), "lfpw", folder, progress=False)
    assert sorted(os.listdir(os.path.join(folder, "training"))) == before


def test_the_wild_set_is_found_like_the_course_data(monkeypatch, pts_dir, tmp_path):
    monkeypatch.delenv("FKP_WILD", raising=False)
    assert media.wild_dir() == "data-wild"
    monkeypatch.setenv("FKP_WILD", str(tmp_path / "elsewhere"))
    assert media.wild_dir() == str(tmp_path / "elsewhere")
    assert run_cli("--pts", str(pts_dir), "--source", "afw") is None
    assert os.path.isfile(tmp_path / "elsewhere" / "training_frames_keypoints.csv")
    assert media.wild_csv() == str(tmp_path / "elsewhere" / "training_frames_keypoints.csv")


def test_a_wild_faces_source_is_the_start_of_the_name_get_data_gives_it(pts_dir, tmp_path):
    dest = get_data.get_wild(str(pts_dir), "afw2", str(tmp_path / "wild"), progress=False)
    names = media.read_keypoints_csv(os.path.join(dest, "training_frames_keypoints.csv")).iloc[:, 0]
    assert {media.wild_source(name) for name in names} == {"afw2"}
    assert media.wild_source("training/lfw-Aaron_Eckhart_0001_0.jpg") == "lfw"  # folders aside
    for course_name in ("Abdel_Aziz_Al-Hakim_02.jpg", "Lfpw-1_0.jpg", "lfpw_1_0.jpg", "lfpw"):
        assert media.wild_source(course_name) is None, course_name


# ---------------------------------------------------------------------------------------------
# The in-the-wild validation split: a tenth of fkp-wild's photos.

def draw_wild_val_photos(names, fraction=0.1, seed=2026):
    """How splits/wild_val_photos.txt was drawn from the set's image names (its header says so)."""
    rng = np.random.default_rng(seed)
    photos = sorted({media.identity_of(name) for name in names})
    held = []
    for source in sorted({photo.split("-", 1)[0] for photo in photos}):
        of_source = [photo for photo in photos if photo.startswith(f"{source}-")]
        held += list(rng.choice(of_source, round(fraction * len(of_source)), replace=False))
    return sorted(held)


def committed_split():
    with open(media.WILD_VAL_PHOTOS) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def test_the_committed_wild_split_is_sorted_photo_names():
    photos = committed_split()
    assert photos == sorted(set(photos)) and photos
    assert set(photos) == media.wild_val_photos()
    assert all(re.fullmatch(r"[a-z0-9]+-[^_/]+", photo) for photo in photos), "not <source>-<photo>"


@pytest.fixture(scope="module")
def wild_names():
    """The image names of the real in-the-wild set (media.wild_dir()): skipped when absent, failed
    when $FKP_WILD names a folder without it (CI sets it only where the set is)."""
    csv_file = media.wild_csv()
    if not os.path.isfile(csv_file):
        if os.environ.get("FKP_WILD"):
            pytest.fail(f"FKP_WILD is set but {csv_file} is missing")
        pytest.skip(f"no in-the-wild set at {os.path.abspath(media.wild_dir())} (set FKP_WILD)")
    return media.read_keypoints_csv(csv_file, arrays=True)[0]


def test_the_wild_split_is_a_tenth_of_each_sources_photos(wild_names):
    photos = {media.identity_of(name) for name in wild_names}
    held = committed_split()
    assert set(held) <= photos, sorted(set(held) - photos)[:3]
    for source in {photo.split("-", 1)[0] for photo in photos}:
        n = sum(photo.startswith(f"{source}-") for photo in photos)
        assert sum(photo.startswith(f"{source}-") for photo in held) == round(0.1 * n), source
    assert held == draw_wild_val_photos(wild_names), "not the draw its header describes"
