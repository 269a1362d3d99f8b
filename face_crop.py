"""The face crop and image reading that detection needs, with NumPy and OpenCV only.

This module exists so that the deployable path (`detect.py --backend onnx`, onnxruntime) never
imports PyTorch: everything here was part of data_load.py, which also holds the PyTorch datasets
and training augmentation, and data_load re-exports all of it (`from data_load import crop_matrix`
keeps working). The one crop that training and detection share:

    detector box (x, y, w, h) --crop_matrix--> 2x3 affine --warp_face--> square grayscale crop
"""

import os
import sys
import tempfile
from contextlib import contextmanager

import cv2
import numpy as np

NUM_KEYPOINTS = 68

# Mirror image of each of the 68 iBUG 300-W points (0-indexed): left eye <-> right eye, etc.
FLIP_PERMUTATION = [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                    27, 28, 29, 30, 35, 34, 33, 32, 31,
                    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]

# How OpenCV's Haar frontal-face box sits on the landmarks, measured on 1154 training images
# (Notebook 1 shows it): square, ~1.16x the landmark box wide and ~1.21x high, its centre ~0.157 of
# its side above the landmark-box centre; from image to image its scale varies by ~10 % and its
# centre by ~9.7 % of the side horizontally, ~4.1 % vertically. Training draws boxes from that
# distribution; the crop moves the box centre down to the landmark centre and pads it.
HAAR_BOX_SCALE = (1.164, 1.208)
HAAR_BOX_RAISE = 0.157
HAAR_BOX_SPREAD = (0.10, 0.097, 0.041)  # std of log-scale, x shift, y shift (fractions of side)
CROP_SHIFT = HAAR_BOX_RAISE  # crop centre = box centre + CROP_SHIFT * box height (down)
CROP_MARGIN = 1.2            # crop side = CROP_MARGIN * max(box w, box h)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DataError(Exception):
    """A problem with the user's data: reported as one line, never as a traceback."""


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


def load_image(path):
    """Read an image file as HxWx3 uint8 RGB; grayscale, RGBA, palette and 16-bit all work.
    Missing, empty, truncated and undecodable files raise DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    with native_stderr_captured() as messages:
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)  # palette images come back as BGR(A)
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image (corrupt or truncated file)")
    if "Premature end of JPEG file" in messages[0]:  # libjpeg fills the missing part with gray
        raise DataError(f"{path}: truncated JPEG file")
    return to_rgb(image, path)


def keypoints_to_box(keypoints):
    """The box OpenCV's Haar cascade typically draws around these landmarks, as (x, y, w, h)."""
    (x0, y0), (x1, y1) = keypoints.min(0), keypoints.max(0)
    side = ((x1 - x0) * HAAR_BOX_SCALE[0] + (y1 - y0) * HAAR_BOX_SCALE[1]) / 2
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - HAAR_BOX_RAISE * side
    return np.array([cx - side / 2, cy - side / 2, side, side])


def crop_matrix(box, size, margin=CROP_MARGIN, shift=CROP_SHIFT, angle=0.0, flip=False):
    """The 2x3 affine map from image pixels to a size x size crop around a detector box.

    The crop is a square of side margin * max(w, h), centred shift * h below the box centre,
    optionally rotated by `angle` degrees (counter-clockwise) and mirrored.
    """
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2 + shift * h
    scale = size / (margin * max(w, h))
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    matrix[:, 2] += (size - 1) / 2 - np.array([cx, cy])  # box centre -> crop centre
    if flip:
        matrix = np.array([[-1, 0, size - 1], [0, 1, 0]]) @ np.vstack([matrix, [0, 0, 1]])
    return matrix


def transform_points(points, matrix):
    """Apply a 2x3 affine matrix to (N, 2) points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_matrix(matrix):
    return cv2.invertAffineTransform(matrix)


def warp_face(gray, matrix, size):
    """Resample a grayscale image through a crop matrix: the single warp per face."""
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def normalize_keypoints(points, size):
    """Crop pixels -> [-1, 1] (the network's output space)."""
    half = (size - 1) / 2
    return (points - half) / half


def denormalize_keypoints(points, size):
    half = (size - 1) / 2
    return points * half + half
