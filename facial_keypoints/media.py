"""Every file in and out apart from model files: images, videos, cameras, labelled CSVs, input
discovery, annotated outputs and their names, JSON Lines. NumPy, OpenCV and Pillow only (no torch),
so that the deployable path, filters.py and get_data.py never load PyTorch.

    image = load_image("photo.jpg")          # HxWx3 uint8 RGB, upright as a photo viewer shows it
    for item in each_input(["a.jpg", "photos/", "clip.mp4"]):   # what the user named, expanded
        ...                                  # item.kind "image" or "video", item.name, item.out_name
    outputs = Outputs("outputs", json_path="k.jsonl", inputs=[...])  # never overwrites an input

Bad input is a DataError: one line naming the file and what is wrong, never a traceback.
"""

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from .face_crop import NUM_KEYPOINTS, eye_roll

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
# A decoded image above this many pixels is refused before decoding: a small file can claim a huge
# image (a 650 KB PNG of 25000 x 25000 pixels decodes to 1.9 GB of RGB). 100 MP fits every camera.
MAX_PIXELS = 100_000_000
# Keypoint coordinates beyond this many pixels from the origin are a broken CSV, not a photo.
MAX_COORDINATE = 1e5


class DataError(Exception):
    """A problem with the user's data: reported as one line, never as a traceback."""


class OutputError(DataError):
    """An output that cannot be written (disk full, say): the whole run stops, not one input."""


# Set by Ctrl-C or SIGTERM inside stop_between_steps; check_stop turns it into KeyboardInterrupt.
stop_requested = threading.Event()


@contextmanager
def stop_between_steps():
    """Inside the block, Ctrl-C and SIGTERM only set stop_requested, and the loop stops at its next
    check_stop, where nothing is half written. An interrupt raised wherever it lands could fall
    inside a save, or inside a finaliser, where Python drops it and the loop goes on."""
    stop_requested.clear()
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {s: signal.signal(s, lambda signum, frame: stop_requested.set()) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def check_stop():
    """KeyboardInterrupt when Ctrl-C or SIGTERM came inside stop_between_steps."""
    if stop_requested.is_set():
        raise KeyboardInterrupt


def one_line(error):
    """An exception's message as one line: its first line, with the next one when the first only
    announces it (load_state_dict's "Error(s) in loading state_dict for Net:")."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return " ".join(lines[:2]) if lines[0].endswith(":") and len(lines) > 1 else lines[0]


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a mistake is one line naming the option: with many options the
    usage block it normally prints first would bury the message. Every command line uses it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (--help lists the options)\n")


# ---------------------------------------------------------------------------------------------
# The dataset on disk: its location and the course's CSV format.

def data_dir():
    """The one data location: $FKP_DATA, else ./data (course archive layout)."""
    return os.environ.get("FKP_DATA", "data")


def data_path(*parts):
    return os.path.join(data_dir(), *parts)


def identity_of(image_name):
    """The person in a course image ('Abdel_Aziz_Al-Hakim_02.jpg' -> 'Abdel_Aziz_Al-Hakim'): the
    frames of one video are one person."""
    return os.path.splitext(os.path.basename(image_name))[0].rsplit("_", 1)[0]


# The unseen-people split: people whose images (in both CSVs) no default training run sees.
# In a clone, beside the package (train.py and evaluate.py read it; they run from a clone).
UNSEEN_PEOPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "splits",
                             "unseen_people.txt")


def unseen_people(path=UNSEEN_PEOPLE):
    """The people of the unseen-people split (one name a line, # comments): a set of names."""
    with open(path) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def read_keypoints_csv(csv_file, images_dir=None, arrays=False):
    """Read a course-format CSV (a header row, then image name, x0, y0 .. x67, y67 per row) and
    check every cell: names present, coordinates finite numbers of sane size. With `images_dir`,
    every listed image must exist there. A CSV whose first line is data (no header) is read whole.
    Returns the rows as a DataFrame (columns "image", "0" .. "135"); with `arrays`, the image
    names (a list) and their keypoints, an (N, 68, 2) float64 array, instead."""
    if not os.path.isfile(csv_file):
        raise DataError(f"{csv_file}: no such file (set FKP_DATA or run `make data`)")
    # Imported here: only labelled CSVs (training, evaluation) need pandas; the pip-installed
    # detector (facial-keypoints, `pip install .`) runs without it.
    import pandas as pd

    try:
        frame = pd.read_csv(csv_file, header=None, dtype={0: str}, keep_default_na=False,
                            na_values={c: [""] for c in range(1, 1 + 2 * NUM_KEYPOINTS)})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{csv_file}: not a readable CSV ({one_line(e)})") from None
    if frame.shape[1] != 1 + 2 * NUM_KEYPOINTS:
        raise DataError(f"{csv_file}: expected {1 + 2 * NUM_KEYPOINTS} columns (image name and "
                        f"68 x,y pairs), found {frame.shape[1]}")
    first = pd.to_numeric(frame.iloc[0, 1:], errors="coerce").to_numpy()
    if np.isnan(first).any() or (first == np.arange(2 * NUM_KEYPOINTS)).all():
        frame = frame.iloc[1:].reset_index(drop=True)  # a header row (the course's: ",0,1,...,135")
    if frame.empty:
        raise DataError(f"{csv_file}: no rows of keypoints")
    coords = frame.iloc[:, 1:].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(coords) | (np.abs(coords) > MAX_COORDINATE)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        cell = frame.iloc[row, column + 1]
        cell = "a blank cell" if pd.isna(cell) else repr(str(cell))
        raise DataError(f"{csv_file}: row {row + 1} ({frame.iloc[row, 0]}), keypoint column {column}: "
                        f"{cell} is not a coordinate (a finite number of pixels); fix or remove that row")
    names = frame.iloc[:, 0].str.strip()
    if (names == "").any():
        row = int(np.flatnonzero(names == "")[0])
        raise DataError(f"{csv_file}: row {row + 1} has no image name; fix or remove that row")
    frame = pd.concat([names, pd.DataFrame(coords, index=frame.index)], axis=1)
    frame.columns = ["image"] + [str(i) for i in range(2 * NUM_KEYPOINTS)]
    if images_dir is not None:
        missing = [n for n in frame["image"] if not os.path.isfile(os.path.join(images_dir, n))]
        if missing:
            raise DataError(f"{csv_file}: {len(missing)} listed image(s) missing from {images_dir}, "
                            f"first {missing[0]}")
    if arrays:  # a copy: the DataFrame holds `coords` read-only
        return list(frame["image"]), coords.reshape(len(frame), NUM_KEYPOINTS, 2).copy()
    return frame


# ---------------------------------------------------------------------------------------------
# Images.

def to_rgb(image, source="image"):
    """Any decoded image (gray, BGR, BGRA, 8 or 16 bit) as HxWx3 uint8 RGB."""
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image.astype(np.float32) * (255 if image.max() <= 1 else 1), 0, 255)
        image = image.astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"{source}: unsupported image shape {image.shape}")
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def to_gray(image):
    """RGB (or already gray) uint8 image -> gray uint8."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


@contextmanager
def native_stderr_captured():
    """Collect what C libraries (libjpeg, libpng, FFmpeg) print on file descriptor 2 during the
    block, so that a bad file gives our one-line message instead of theirs; yields a list that
    holds the captured text after the block."""
    captured = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode(errors="replace"))


def image_size(path):
    """(width, height) from the file's header, without decoding it; None if Pillow cannot tell.
    Pillow's own decompression-bomb check is off here: load_image applies ours, with its message."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def load_image(path, max_pixels=MAX_PIXELS):
    """Read an image file as HxWx3 uint8 RGB, turned upright by its EXIF orientation tag (all
    eight values), so keypoints are in the pixels a photo viewer shows. Grayscale, RGBA, palette
    and 16-bit files all work. Missing, empty, truncated, undecodable and over-large (more than
    `max_pixels`) files raise DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    size = image_size(path)
    if size and size[0] * size[1] > max_pixels:
        raise DataError(f"{path}: {size[0]} x {size[1]} pixels is over the limit of "
                        f"{max_pixels / 1e6:.0f} megapixels; downscale the image first")
    # ANYCOLOR | ANYDEPTH keeps gray and 16-bit pixels as they are and, unlike IMREAD_UNCHANGED,
    # lets OpenCV apply the EXIF orientation; an alpha channel is dropped (we never use it).
    with native_stderr_captured() as messages:
        try:
            image = cv2.imread(path, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
        except cv2.error:  # OpenCV's own size limit, for files whose header Pillow cannot read
            image = None
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image (corrupt or truncated file)")
    if "Premature end of JPEG file" in messages[0]:  # libjpeg fills the missing part with gray
        raise DataError(f"{path}: truncated JPEG file")
    return to_rgb(image, path)


# ---------------------------------------------------------------------------------------------
# Videos and cameras.

class Video:
    """Frames of a video file or camera, as RGB uint8 arrays: `for rgb in video`. After the loop,
    `truncated` says whether a file ended before the frame count its header gives."""

    def __init__(self, source, name):
        if isinstance(source, int) and source < 0:
            raise DataError(f"{name}: camera numbers start at 0")
        if isinstance(source, str):
            if not os.path.isfile(source):
                raise DataError(f"{name}: no such file")
            if os.path.getsize(source) == 0:
                raise DataError(f"{name}: empty file")
        self.name = name
        with native_stderr_captured():
            self.capture = cv2.VideoCapture(source)
            ok, self.first = self.capture.read() if self.capture.isOpened() else (False, None)
        if not ok:
            self.capture.release()
            what = "cannot open the camera" if isinstance(source, int) else "not a readable video"
            raise DataError(f"{name}: {what}")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(source, str) else 0
        self.height, self.width = self.first.shape[:2]
        self.frames_read, self.truncated = 0, False

    def __iter__(self):
        frame = self.first
        while frame is not None:
            self.frames_read += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            with native_stderr_captured():
                ok, frame = self.capture.read()
            frame = frame if ok else None
        self.truncated = 0 < self.frames_read < self.frame_count - 1  # headers may count one extra

    def close(self):
        self.capture.release()


class VideoWriter:
    """An .mp4 file written frame by frame from BGR arrays (what cv2 and draw_faces give)."""

    def __init__(self, path, fps, width, height):
        self.path = path
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            raise DataError(f"{path}: could not open the video for writing")

    def write(self, bgr):
        self.writer.write(bgr)

    def close(self):
        self.writer.release()


# ---------------------------------------------------------------------------------------------
# What the user named on the command line: files, folders, videos, a camera.

def input_kind(path):
    """'image', 'video' or 'folder' for a path the user gave; DataError for anything else."""
    if os.path.isdir(path):
        return "folder"
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file or folder")
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    raise DataError(f"{path}: not an image or video (extension {ext or 'missing'}; images: "
                    f"{' '.join(IMAGE_EXTENSIONS)}; videos: {' '.join(VIDEO_EXTENSIONS)})")


def folder_images(folder):
    """The images in a folder and its subfolders, sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


@dataclass
class Input:
    """One thing to process: a still image or a video (file or camera).

    `name` is how the user knows it (the path, or "camera 0"), `out_name` the output's path
    relative to the output folder (an image from a folder keeps its path below the folder's
    name), `source` what to read (a path, a camera index, or the image itself), and `folder` the
    input folder an image came from (None otherwise)."""
    kind: str
    name: str
    out_name: str
    source: object
    folder: str = None

    def image(self):
        """The still image as RGB uint8 (read now, so a bad file fails in the caller's loop)."""
        return self.source if isinstance(self.source, np.ndarray) else load_image(self.source)

    def video(self):
        return Video(self.source, self.name)


def each_input(paths, camera=None, default=None, progress=True):
    """Every input the user named, in order: files as they are, folders expanded (with a progress
    bar), then the camera; `default()` (an Input) when nothing is named. A path that is not usable
    yields its DataError instead of an Input, so the caller reports it and goes on."""
    if not paths and camera is None and default is not None:
        try:
            item = default()
        except DataError as error:
            item = error
        yield item
    for path in paths:
        try:
            kind = input_kind(path)
        except DataError as error:
            yield error
            continue
        if kind != "folder":
            yield Input(kind, path, os.path.basename(path), path)
            continue
        images = folder_images(path)
        if not images:
            yield DataError(f"{path}: no images in this folder")
        folder_name = os.path.basename(os.path.abspath(path)) or "root"  # "." and ".." have names too
        for image_path in tqdm(images, desc=folder_name, unit="image", disable=None if progress else True):
            relative = os.path.join(folder_name, os.path.relpath(image_path, path))
            yield Input("image", image_path, relative, image_path, folder=path)
    if camera is not None:
        yield Input("video", f"camera {camera}", f"camera{camera}.mp4", camera)


# ---------------------------------------------------------------------------------------------
# Writing results.

@dataclass
class Face:
    """One face found in an image: what detect.py draws and writes."""
    box: np.ndarray        # (4,) x, y, w, h in image pixels (upright; the crop was turned by its roll)
    keypoints: np.ndarray  # (68, 2) x, y in image pixels
    track_id: int = -1     # video only: the same face keeps its id from frame to frame

    @property
    def roll(self):
        """Degrees the face is turned clockwise on screen (its eye line; face_crop.eye_roll)."""
        return eye_roll(self.keypoints)



def draw_faces(image, faces):
    """A BGR copy of an RGB (or gray) image with each face's box and keypoints drawn."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)
    thickness = max(1, round(max(image.shape[:2]) / 400))
    for face in faces:
        x, y, w, h = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (0, 200, 0), thickness, cv2.LINE_AA)
        if face.track_id >= 0:
            cv2.putText(canvas, str(face.track_id), (x, max(0, y - 4)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * thickness, (0, 200, 0), thickness, cv2.LINE_AA)
        radius = max(1, round(max(w, h) / 80))
        for px, py in face.keypoints:
            cv2.circle(canvas, (int(round(px)), int(round(py))), radius, (255, 0, 255), -1, cv2.LINE_AA)
    return canvas


def face_record(face):
    """A face as plain JSON: box [x, y, w, h] and 68 [x, y] pairs, in pixels, 2 decimals, and its
    roll in degrees (Face.roll), 1 decimal."""
    return {"box": [round(float(v), 2) for v in face.box],
            "keypoints": [[round(float(x), 2), round(float(y), 2)] for x, y in face.keypoints],
            "roll": round(float(face.roll), 1)}


def image_record(name, shape, faces, frame=None):
    record = {"image": name}
    if frame is not None:
        record["frame"] = frame
    record.update(width=int(shape[1]), height=int(shape[0]), faces=[face_record(f) for f in faces])
    return record


def check_writable(option, path):
    """Refuse, before any long work, an output file that could not be written at the end: a
    folder, a path under a file, or a folder this process cannot write in (DataError)."""
    if os.path.isdir(path):
        raise DataError(f"{option} {path} is a folder; give the name of a file (in it, or elsewhere)")
    folder = os.path.dirname(path) or "."
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise DataError(f"{option} {path}: {folder} is a file, not a folder; pick another {option}")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DataError(f"{option} {path}: cannot write in {folder} ({e.strerror}); "
                        f"pick another {option}") from None


def write_image(path, bgr):
    """Write an output image; a failure is an OutputError: the output folder, not one input, is at
    fault (full disk, no permission), so the run stops."""
    if not cv2.imwrite(path, bgr):
        raise OutputError(f"{path}: could not write the image (disk full, or no permission?)")


def inside(path, folder):
    """True when path is folder itself or anything below it (paths resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def holds_json_lines(path):
    """True for a missing or empty file, or one whose first line is a JSON object: a file --json may
    replace. Any other regular file (a model, an image) is not ours to overwrite; a device such
    as /dev/null is written as it is."""
    if not os.path.isfile(path):
        return True
    try:
        with open(path, "rb") as f:
            first = f.readline(1_000_000)
    except OSError:
        return False
    if not first.strip():
        return True
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


class Outputs:
    """Output files under `out_dir` named after their inputs, and the JSON Lines file.

    The one naming rule: an output never replaces one of the run's inputs (files, or anything
    inside an input folder) nor a file written earlier in the run: it gets a _2, _3 ... suffix
    instead. A `json_path` that is one of the inputs, or inside an input folder, is refused up
    front, before anything is read or written."""

    def __init__(self, out_dir, json_path=None, inputs=()):
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise DataError(f"{out_dir}: is a file; --out takes a folder")
        self.out_dir, self.used, self.json_path = out_dir, set(), json_path
        self.protected = [os.path.realpath(p) for p in inputs if isinstance(p, str) and os.path.exists(p)]
        self.json = None
        if json_path:
            if any(inside(json_path, p) for p in self.protected):
                raise DataError(f"{json_path}: is one of the inputs; choose another --json file")
            if os.path.isdir(json_path):
                raise DataError(f"{json_path}: is a folder; --json takes a file name")
            if not holds_json_lines(json_path):
                raise DataError(f"{json_path}: exists and is not a JSON Lines file (a model, an image?); "
                                f"choose another --json file")
            os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
            self.json = open(json_path, "w")

    def is_input(self, path):
        """An existing file given as input or inside an input folder."""
        return os.path.exists(path) and any(inside(path, p) for p in self.protected)

    def path_for(self, relative_name, ext=None, suffix=""):
        """out_dir/relative_name (stem + suffix, extension replaced by `ext` if given), made unique."""
        stem, old_ext = os.path.splitext(relative_name)
        stem, ext = stem + suffix, ext or old_ext
        path, n = os.path.join(self.out_dir, stem + ext), 1
        while os.path.realpath(path) in self.used or self.is_input(path):
            n += 1
            path = os.path.join(self.out_dir, f"{stem}_{n}{ext}")
        self.used.add(os.path.realpath(path))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return path

    def write_record(self, record):
        """One JSON line, flushed at once: a full disk stops the run at the record that failed."""
        if self.json:
            try:
                self.json.write(json.dumps(record) + "\n")
                self.json.flush()
            except OSError as e:
                raise OutputError(f"{self.json_path}: cannot write ({e.strerror or e})") from None

    def close(self):
        if self.json:
            try:
                self.json.close()
            except OSError:
                pass  # already reported by write_record
