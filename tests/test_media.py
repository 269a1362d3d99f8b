"""media.py and outputs.py: images come in upright (EXIF), huge images are refused before decoding, CSVs are
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

from facial_keypoints import media, outputs
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
    # the astronaut's face, the largest: --no-flip has no face check, so her neck ring comes out too
    face = max(record["faces"], key=lambda found: found["box"][2])
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
# Outputs never overwrite inputs: the four cases that lost data before outputs.Outputs.

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
    lines = result.stderr.splitlines()  # the wording is outputs.reserve_output's
    assert result.returncode == 2 and len(lines) == 1 and "--out m.pt" in lines[0], result.stderr
    assert sha256(model) == before


def test_outputs_refuse_an_out_folder_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(DataError, match="taken: is a file"):
        outputs.Outputs(str(tmp_path / "taken"))


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
        outputs.Outputs(str(tmp_path / "out"), str(model))
    assert model.read_bytes() == b"PK\x03\x04 not json at all"
    earlier = tmp_path / "faces.jsonl"
    earlier.write_text('{"image": "a.jpg", "faces": []}\n')
    for path in (earlier, tmp_path / "empty.jsonl", tmp_path / "new.jsonl"):
        if path.name == "empty.jsonl":
            path.write_text("")
        outputs.Outputs(str(tmp_path / "out"), str(path)).close()


# ---------------------------------------------------------------------------------------------
# Issue 30: outputs reserved up front and written whole.

def test_reserve_output_refuses_inputs_protected_files_and_images_by_name(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    refusals = [
        (dict(path=photos / "k.jsonl", inputs=[str(photos)]), "is inside the input folder"),
        (dict(path=model, inputs=[str(model)]), "is one of the inputs"),
        (dict(path=model, protected=[str(model)]), "which this run must leave as it is"),
        (dict(path=os.path.join(outputs.SHIPPED_MODELS, "new.jsonl"), protected=[outputs.SHIPPED_MODELS]),
         "saved_models, which this run must leave as it is"),
        (dict(path=tmp_path / "out" / "face.png", json_lines=True), "a name for an image or a video"),
        (dict(path=model, json_lines=True), "not a JSON Lines file"),
        (dict(path=model / "k.jsonl"), "is a file, not a folder"),
        (dict(path=photos), "is a folder"),
    ]
    for arguments, message in refusals:
        arguments["path"] = str(arguments["path"])
        with pytest.raises(media.OutputError, match=message) as error:
            outputs.reserve_output("--json", **arguments)
        assert str(error.value).startswith(f"--json {arguments['path']}") and "\n" not in str(error.value)
    assert not os.path.exists(os.path.join(outputs.SHIPPED_MODELS, "new.jsonl"))
    assert model.read_bytes() == b"weights"
    ok = str(tmp_path / "new" / "k.jsonl")
    assert outputs.reserve_output("--json", ok, inputs=[str(photos), 0, None], protected=[str(model)],
                                json_lines=True) == ok
    assert outputs.reserve_output("--json", "/dev/null", json_lines=True) == "/dev/null"


def test_json_lines_replace_the_target_whole_at_close_and_keep_it_on_a_stop(tmp_path):
    """Records reach the target only at close, whole; a run stopped before its first input
    leaves the target as it was; the new file has the mode a plain open() gives."""
    target = tmp_path / "k.jsonl"
    target.write_text('{"image": "old.jpg", "faces": []}\n')
    os.chmod(target, 0o644)
    before = target.read_bytes()
    out = outputs.JsonLinesFile("--json", str(target))
    out.write({"image": "new.jpg", "faces": []})
    assert target.read_bytes() == before
    os.write(out.fd, b'{"image": "cut sho')  # a record a full disk cut short: never counted whole
    out.close()
    assert target.read_text() == '{"image": "new.jpg", "faces": []}\n'
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in tmp_path.iterdir()] == ["k.jsonl"]

    unstarted = outputs.JsonLinesFile("--json", str(target))
    unstarted.write({"image": "never.jpg", "faces": []})
    unstarted.close(keep=False)
    fresh = outputs.JsonLinesFile("--json", str(tmp_path / "fresh.jsonl"))
    fresh.close(keep=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.jsonl"]


def test_a_second_run_on_the_same_json_lines_file_is_refused(tmp_path):
    target = str(tmp_path / "k.jsonl")
    first = outputs.JsonLinesFile("--json", target)
    with pytest.raises(media.OutputError, match="another run is writing this file"):
        outputs.JsonLinesFile("--json", target)
    first.write({"image": "a.jpg", "faces": []})
    first.close()
    second = outputs.JsonLinesFile("--json", target)  # the lock went with the first run
    second.close()
    assert open(target).read() == ""


def test_write_image_blames_a_too_long_name_on_its_input_and_leaves_nothing(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(DataError, match="file name too long") as error:
        outputs.write_image(str(tmp_path / ("n" * 300 + ".png")), image)
    assert not isinstance(error.value, media.OutputError)  # the run goes on with the next input
    outputs.write_image(str(tmp_path / "ok.png"), image)
    assert cv2.imread(str(tmp_path / "ok.png")).shape == (8, 8, 3)
    assert os.listdir(tmp_path) == ["ok.png"]


def test_a_video_is_under_its_name_only_once_whole(tmp_path):
    path = tmp_path / "clip.mp4"
    writer = outputs.VideoWriter(str(path), 10, 32, 24)
    for _ in range(3):
        writer.write(np.zeros((24, 32, 3), np.uint8))
    assert not path.exists()
    writer.close()
    assert media.readable_video(str(path)) and os.listdir(tmp_path) == ["clip.mp4"]
    empty = outputs.VideoWriter(str(tmp_path / "empty.mp4"), 10, 32, 24)
    empty.close()  # nothing written: no file
    assert os.listdir(tmp_path) == ["clip.mp4"]


def test_image_size_drops_pillows_corrupt_exif_warning(tmp_path, recwarn):
    path = tmp_path / "face.jpg"
    jpeg = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))[1].tobytes()
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 5) + b"\x01\x02" * 3  # 5 entries claimed, 0 held
    path.write_bytes(jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:])
    assert media.image_size(str(path)) == (16, 16)
    assert load_image(str(path)).shape == (16, 16, 3)
    assert not [w for w in recwarn if "EXIF" in str(w.message)]


def test_a_stop_request_ends_with_its_block():
    """A Ctrl-C that stopped one run is not waiting for the next check_stop outside any run (a
    library call such as filters.filter_video checks between frames)."""
    import signal
    with media.stop_between_steps():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            media.check_stop()
    media.check_stop()


def test_a_second_signal_interrupts_at_once():
    """The first Ctrl-C or SIGTERM waits for check_stop and puts the previous handlers back: a second
    one reaches them at once (a run stuck loading a model or caching data stops without SIGKILL)."""
    import signal
    reached = []
    saved = {s: signal.signal(s, lambda signum, frame: reached.append(signum))
             for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for first, second in ((signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGINT)):
            reached.clear()
            with media.stop_between_steps():
                os.kill(os.getpid(), first)
                assert reached == []  # noted only
                os.kill(os.getpid(), second)
                assert reached == [second]
                with pytest.raises(KeyboardInterrupt):
                    media.check_stop()
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def test_json_lines_take_a_name_as_long_as_the_file_system_allows(tmp_path):
    target = tmp_path / ("k" * 244 + ".jsonl")  # 250 characters: legal (255), too long with mkstemp's 14 more
    out = outputs.JsonLinesFile("--json", str(target))
    out.write({"image": "a.jpg", "faces": []})
    out.close()
    assert target.read_text() == '{"image": "a.jpg", "faces": []}\n'
    assert os.listdir(tmp_path) == [target.name]


def test_holds_plot_tells_matplotlib_files_from_photos(tmp_path):
    from matplotlib.figure import Figure
    for ext in ("png", "pdf", "svg"):
        Figure(figsize=(1, 1)).savefig(tmp_path / f"plot.{ext}")
        assert outputs.holds_plot(str(tmp_path / f"plot.{ext}")), ext
    cv2.imwrite(str(tmp_path / "photo.png"), data.astronaut()[:64, :64])
    assert not outputs.holds_plot(str(tmp_path / "photo.png"))
    assert not outputs.holds_plot(str(tmp_path / "absent.png"))
