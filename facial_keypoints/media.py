"""Every file that comes in, apart from model files: images, videos, cameras, labelled CSVs, what
the user named on the command line; and what a result is (a Face, its drawing, its JSON record).
Where results are written, safely, is outputs.py. NumPy, OpenCV and Pillow only (no torch), so
that the deployable path, filters.py and get_data.py never load PyTorch.

    image = load_image("photo.jpg")          # HxWx3 uint8 RGB, upright as a photo viewer shows it
    for item in each_input(["a.jpg", "photos/", "clip.mp4"]):   # what the user named, expanded
        ...                                  # item.kind "image" or "video", item.name, item.out_name

Bad input is a DataError: one line naming the file and what is wrong, never a traceback.
"""

import argparse
import errno
import os
import re
import signal
import stat
import sys
import tempfile
import threading
import warnings
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
    """Inside the block, the first Ctrl-C or SIGTERM only sets stop_requested, and the loop stops at
    its next check_stop, where nothing is half written. An interrupt raised wherever it lands could
    fall inside a save, or inside a finaliser, where Python drops it and the loop goes on. The
    first signal puts the previous handlers back: a second one interrupts at once (a run that
    checks for none while it loads a model or caches its data)."""
    stop_requested.clear()
    signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()

    def stop(signum, frame):
        stop_requested.set()
        for s, handler in previous.items():
            signal.signal(s, handler)

    previous = {s: signal.signal(s, stop) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stop_requested.clear()  # the request was this block's: a later check_stop (a library call) goes on


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


def wild_dir():
    """The in-the-wild set's location (fkp-wild's layout: training/ and its CSV), found as
    data_dir() finds the course's: $FKP_WILD, else ./data-wild."""
    return os.environ.get("FKP_WILD", "data-wild")


def wild_csv():
    """The in-the-wild set's labels, in the course's CSV format; its images are in wild_images()."""
    return os.path.join(wild_dir(), "training_frames_keypoints.csv")


def wild_images():
    """The folder of the in-the-wild set's images, the faces wild_csv() labels."""
    return os.path.join(wild_dir(), "training")


# A source of the in-the-wild set (fkp-wild's lfpw, helen, afw; get_data.py --source): lower-case
# letters and digits. get_data.py names the faces it imports `<source>-<photo>_<face>.jpg`.
SOURCE_NAME = re.compile(r"[a-z0-9]+")


def wild_source(image_name):
    """The source of an in-the-wild face, its file name before the first `-` ('lfpw-0001_0.jpg':
    lfpw); None for a name that does not start so, as the course's do (named after the person:
    'Abdel_Aziz_Al-Hakim_02.jpg'). The one rule that tells which set, and which source, a face is from."""
    source, hyphen, _ = os.path.basename(image_name).partition("-")
    return source if hyphen and SOURCE_NAME.fullmatch(source) else None


# The in-the-wild validation split: photos of the wild set ('<source>-<photo>', identity_of of
# their faces' names) whose faces are held out, every face of a photo together.
WILD_VAL_PHOTOS = os.path.join(os.path.dirname(UNSEEN_PEOPLE), "wild_val_photos.txt")


def wild_val_photos(path=WILD_VAL_PHOTOS):
    """The photos of the in-the-wild validation split (one name a line, # comments): a set."""
    return unseen_people(path)


def in_wild_val_photos(names):
    """For each face name of the wild set, whether its photo is in the validation split: the one
    rule training, export and the benchmark hold out and score by (the split read once)."""
    held_out = wild_val_photos()
    return [identity_of(name) in held_out for name in names]


def model_file_problem(path):
    """Why `path` cannot be read as a model file, in a few words, or None. Asked before opening
    it: reading a pipe waits for a writer, and "no such file" would mislead about a folder, a pipe
    or a symbolic link loop."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link loop, not a model file"
        if os.path.islink(path):
            return "a symbolic link to a missing file"
        return "no such model file" if error.errno == errno.ENOENT else (error.strerror or str(error)).lower()
    if stat.S_ISDIR(mode):
        return "a folder, not a model file"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe, socket or device), not a model file"
    return None


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
    Pillow's own decompression-bomb check is off here: load_image applies ours, with its message.
    Pillow's warning about corrupt EXIF data is dropped: OpenCV reads the pixels (and what it can of
    the orientation) all the same, and the user can do nothing with it."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="(Possibly c|C)orrupt EXIF", category=UserWarning)
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


def readable_video(path):
    """Whether a video file opens and gives its first frame."""
    with native_stderr_captured():
        capture = cv2.VideoCapture(path)
        ok = capture.isOpened() and capture.read()[0]
        capture.release()
    return ok


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
# Results: what a face found is, drawn and as JSON (outputs.py writes them).

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


def image_record(name, shape, faces, convention, frame=None):
    """One JSON Lines record: the image (and video frame), its size, the labelling convention its
    keypoints follow ("300w" or "course": the two place some points differently) and its faces."""
    record = {"image": name}
    if frame is not None:
        record["frame"] = frame
    record.update(width=int(shape[1]), height=int(shape[0]), convention=convention,
                  faces=[face_record(f) for f in faces])
    return record
