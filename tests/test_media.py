"""media.py: images come in upright (EXIF), huge images are refused before decoding, CSVs are
checked cell by cell, and no command ever writes over one of its inputs."""

import hashlib
import os
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data

from facial_keypoints import media
from facial_keypoints.media import DataError, load_image, read_keypoints_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIF_ORIENTATION = 0x0112


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_script(script, *args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)


def save_jpeg_with_orientation(path, rgb, orientation):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif)


# ---------------------------------------------------------------------------------------------
# EXIF orientation.

@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_image_applies_every_exif_orientation(tmp_path, orientation):
    rgb = np.zeros((40, 64, 3), np.uint8)
    rgb[:10, :16] = (255, 0, 0)  # a red corner marks the top left
    rgb[30:, 48:] = (0, 0, 255)
    path = str(tmp_path / f"o{orientation}.jpg")
    save_jpeg_with_orientation(path, rgb, orientation)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    loaded = load_image(path)
    assert loaded.shape == expected.shape
    assert np.abs(loaded.astype(int) - expected).mean() < 2
    if orientation in (5, 6, 7, 8):  # a quarter turn: width and height swap
        assert loaded.shape[:2] == (64, 40)


@pytest.mark.parametrize("orientation, turn", [(6, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                               (8, cv2.ROTATE_90_CLOCKWISE), (3, cv2.ROTATE_180)])
def test_a_phone_photo_stored_sideways_gets_keypoints_on_the_face(tmp_path, orientation, turn):
    """A camera stores the sensor's pixels and says in EXIF how to turn them upright; detect.py
    must find the face in the upright picture, where it is in the original."""
    upright = np.ascontiguousarray(data.astronaut()[0:300, 100:400])  # one face
    save_jpeg_with_orientation(tmp_path / "phone.jpg", cv2.rotate(upright, turn), orientation)
    result = run_script("detect.py", "phone.jpg", "--out", "out", "--json", "k.jsonl", "--no-flip",
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = __import__("json").loads((tmp_path / "k.jsonl").read_text())
    assert (record["width"], record["height"]) == (300, 300)
    [face] = record["faces"]
    eyes = np.array(face["keypoints"])[[36, 45]]
    # upright, the outer eye corners are near (97, 100) and (155, 104): left of each other, level
    assert eyes[0, 0] < eyes[1, 0] and abs(eyes[0, 1] - eyes[1, 1]) < 10
    assert np.linalg.norm(eyes.mean(0) - [126, 102]) < 10


# ---------------------------------------------------------------------------------------------
# Images too large, CSVs that are not what they claim.

def png_claiming(width, height):
    """A tiny PNG file whose header claims width x height pixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(60000, 60000))
    with pytest.raises(DataError, match=r"bomb.png: 60000 x 60000 pixels is over the limit of 100 megapix"):
        load_image(str(path))
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(DataError, match="over the limit"):
        load_image(str(small), max_pixels=1000)
    assert load_image(str(small)).shape == (30, 40, 3)


def write_csv(path, rows, header=True):
    lines = ["," + ",".join(str(i) for i in range(136))] if header else []
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_csv_cells_are_checked_and_a_headerless_csv_keeps_its_first_row(tmp_path):
    good = [[f"p_{i}.jpg", *np.linspace(10, 100, 136).round(1)] for i in range(3)]
    write_csv(tmp_path / "plain.csv", good, header=False)
    names = list(read_keypoints_csv(str(tmp_path / "plain.csv")).iloc[:, 0])
    assert names == ["p_0.jpg", "p_1.jpg", "p_2.jpg"]
    write_csv(tmp_path / "course.csv", good)
    frame = read_keypoints_csv(str(tmp_path / "course.csv"))
    assert len(frame) == 3 and frame.iloc[:, 1:].to_numpy().dtype == np.float64
    for name, cell, message in [("blank", "", "row 2 .* is not a coordinate"),
                                ("word", "abc", "row 2 .* 'abc' is not a coordinate"),
                                ("huge", "1e30", "row 2 .* is not a coordinate"),
                                ("nan", "nan", "row 2 .* is not a coordinate")]:
        rows = [list(r) for r in good]
        rows[1][5] = cell
        write_csv(tmp_path / f"{name}.csv", rows)
        with pytest.raises(DataError, match=f"{name}.csv: {message}"):
            read_keypoints_csv(str(tmp_path / f"{name}.csv"))
    rows = [list(r) for r in good]
    rows[2][0] = " "
    write_csv(tmp_path / "noname.csv", rows)
    with pytest.raises(DataError, match="noname.csv: row 3 has no image name"):
        read_keypoints_csv(str(tmp_path / "noname.csv"))
    (tmp_path / "short.csv").write_text((tmp_path / "course.csv").read_text() + "p_9.jpg,1,2,3\n")
    with pytest.raises(DataError, match="short.csv: row 4 .* is not a coordinate"):
        read_keypoints_csv(str(tmp_path / "short.csv"))
    with pytest.raises(DataError, match="3 listed image.s. missing from .*, first p_0.jpg"):
        read_keypoints_csv(str(tmp_path / "course.csv"), images_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Outputs never overwrite inputs: the four cases that lost data before media.Outputs.

def face_image(path):
    cv2.imwrite(str(path), cv2.cvtColor(cv2.resize(data.astronaut(), (200, 200)), cv2.COLOR_RGB2BGR))


def test_detect_refuses_a_json_file_that_is_an_input(tmp_path):
    face_image(tmp_path / "victim.jpg")
    before = sha256(tmp_path / "victim.jpg")
    result = run_script("detect.py", "victim.jpg", "--json", "victim.jpg", "--out", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "victim.jpg" in result.stderr, result.stderr
    assert sha256(tmp_path / "victim.jpg") == before


def test_filters_keeps_same_name_images_of_different_folders_apart(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / "dir" / folder).mkdir(parents=True)
        face_image(tmp_path / "dir" / folder / "x.jpg")
    result = run_script("filters.py", "dir", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "dir" / "a" / "x_sunglasses.png").is_file()
    assert (tmp_path / "out" / "dir" / "b" / "x_sunglasses.png").is_file()


def test_filters_into_its_own_input_folder_overwrites_nothing(tmp_path):
    (tmp_path / "fin").mkdir()
    face_image(tmp_path / "fin" / "x.jpg")
    face_image(tmp_path / "fin" / "x_sunglasses.png")  # what the output would be called
    before = {name: sha256(tmp_path / "fin" / name) for name in os.listdir(tmp_path / "fin")}
    result = run_script("filters.py", "fin", "--out", "fin", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert {name: sha256(tmp_path / "fin" / name) for name in before} == before
    written = sorted(os.path.relpath(os.path.join(r, f), tmp_path / "fin")
                     for r, _, files in os.walk(tmp_path / "fin") for f in files)
    assert len(written) == 4  # the two inputs, each filtered once, nothing else


def test_export_refuses_to_write_over_its_own_model(tmp_path):
    model = tmp_path / "m.pt"
    shipped = os.path.join(ROOT, "facial_keypoints", "saved_models", "keypoints_model.pt")
    model.write_bytes(open(shipped, "rb").read())
    before = sha256(model)
    result = run_script("export.py", "--model", "m.pt", "--out", "m.pt", cwd=tmp_path)
    assert result.returncode == 2 and "--out m.pt is the PyTorch model itself" in result.stderr
    assert sha256(model) == before


def test_outputs_refuse_an_out_folder_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(DataError, match="taken: is a file"):
        media.Outputs(str(tmp_path / "taken"))


def test_ctrl_c_and_sigterm_are_noted_and_raised_between_steps():
    """Inside stop_between_steps a signal only sets the flag; check_stop raises it where the loop
    can stop; outside, the previous handlers are back."""
    import signal
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    for signum in (signal.SIGINT, signal.SIGTERM):
        with media.stop_between_steps():
            media.check_stop()  # nothing yet
            os.kill(os.getpid(), signum)  # handled at once, in this (the main) thread: no exception
            with pytest.raises(KeyboardInterrupt):
                media.check_stop()
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with media.stop_between_steps():
        media.check_stop()  # a new block starts clear


def test_json_never_replaces_a_file_that_is_not_json_lines(tmp_path):
    """--json naming a model or an image is refused, the file untouched; an earlier JSON Lines file
    (or an empty or missing one) may be replaced."""
    model = tmp_path / "keypoints_model.pt"
    model.write_bytes(b"PK\x03\x04 not json at all")
    with pytest.raises(media.DataError, match="not a JSON Lines file"):
        media.Outputs(str(tmp_path / "out"), str(model))
    assert model.read_bytes() == b"PK\x03\x04 not json at all"
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text('{"image": "a.jpg", "faces": []}\n')
    for path in (earlier, tmp_path / "empty.jsonl", tmp_path / "new.jsonl"):
        if path.name == "empty.jsonl":
            path.write_text("")
        media.Outputs(str(tmp_path / "out"), str(path)).close()
