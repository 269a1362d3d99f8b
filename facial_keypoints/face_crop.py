"""Crop geometry: where the face crop sits on a detector box, and the 2x3 affine maps in and out of
it. NumPy and OpenCV only: training (data_load.py) and detection (detect.py) share it, and the
deployable path never imports PyTorch. The one crop that training and detection share:

    detector box (x, y, w, h) --crop_matrix--> 2x3 affine --warp_face--> square grayscale crop
"""

import math
import reprlib

import cv2
import numpy as np

NUM_KEYPOINTS = 68

# Mirror image of each of the 68 iBUG 300-W points (0-indexed): left eye <-> right eye, etc.
FLIP_PERMUTATION = [16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                    27, 28, 29, 30, 35, 34, 33, 32, 31,
                    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
                    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65]

# How OpenCV's Haar frontal-face box sits on the landmarks, measured on the training images
# (Notebook 1 shows it): square, wider and higher than the landmark box by HAAR_BOX_SCALE, its
# centre HAAR_BOX_RAISE of its side above the landmark-box centre, its scale and centre varying
# from image to image by HAAR_BOX_SPREAD. Training draws boxes from that distribution; the crop
# moves the box centre down to the landmark centre and pads it.
HAAR_BOX_SCALE = (1.164, 1.208)
HAAR_BOX_RAISE = 0.157
HAAR_BOX_SPREAD = (0.10, 0.097, 0.041)  # std of log-scale, x shift, y shift (fractions of side)
CROP_SHIFT = HAAR_BOX_RAISE  # crop centre = box centre + CROP_SHIFT * box height (down)
# What detection must know about a model besides its weights: the crop it was trained on (models.py
# saves these in a .pt's metadata, export.py in an ONNX file's; backends.py checks them at load).
CROP_META = ("input_size", "crop_margin", "crop_shift")
CROP_MARGIN = 1.2            # crop side = CROP_MARGIN * max(box w, box h)
# The values crop_meta_problem accepts: what crop_matrix and normalize_keypoints can use, and far
# wider than any model train.py saves. A crop of 1 px has no centre to normalise around; a larger
# one than MAX_INPUT_SIZE is a broken file, not a face crop (and the load-time probe allocates it).
# A margin below 0.5 crops less than half the box (at 0, crop_matrix divides by zero; below, it
# mirrors), above 4 the face is a speck of the crop; a shift beyond a box height leaves the box.
MAX_INPUT_SIZE = 2048
CROP_MARGIN_RANGE = (0.5, 4.0)
CROP_SHIFT_RANGE = (-1.0, 1.0)
MIN_BOX_SIDE = 1.0  # pixels: crop_matrix's floor for a box of no size


def is_number(value):
    """A finite int or float; not a bool, which Python counts as an int."""
    return isinstance(value, int | float) and not isinstance(value, bool) and (
        isinstance(value, int) or math.isfinite(value))


# crop_meta_problem's rules: each CROP_META value's test (after is_number) and its wording.
CROP_META_RULES = {
    "input_size": (lambda v: isinstance(v, int) and 2 <= v <= MAX_INPUT_SIZE,
                   f"a whole number of pixels from 2 to {MAX_INPUT_SIZE}"),
    "crop_margin": (lambda v: CROP_MARGIN_RANGE[0] <= v <= CROP_MARGIN_RANGE[1],
                    "a number from {:g} to {:g}".format(*CROP_MARGIN_RANGE)),
    "crop_shift": (lambda v: CROP_SHIFT_RANGE[0] <= v <= CROP_SHIFT_RANGE[1],
                   "a number from {:g} to {:g}".format(*CROP_SHIFT_RANGE)),
}


def crop_meta_problem(meta):
    """What is wrong with a model's crop metadata (CROP_META), in a few words, or None: the one
    check that model files (.pt and ONNX) pass at load time, so that a broken value is a line
    naming the file there and not a crash at the first face."""
    missing = [key for key in CROP_META if key not in meta]
    if missing:
        return f"its metadata has no {', '.join(missing)}"
    for key, (valid, wanted) in CROP_META_RULES.items():
        if not (is_number(meta[key]) and valid(meta[key])):
            return f"its metadata says {key} {reprlib.repr(meta[key])}, not {wanted}"
    return None


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
    # a model that puts every keypoint on one point implies a box of no size: crop a pixel of it
    scale = size / (margin * max(w, h, MIN_BOX_SIDE))
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


def box_iou(a, b, over="union"):
    """Intersection over union of every box in a (N, 4) with every box in b (M, 4), as (N, M);
    with over="smaller", over the smaller box's area (1 when one box lies inside the other)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(1, -1, 4)
    w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_a, area_b = a[..., 2] * a[..., 3], b[..., 2] * b[..., 3]
    if over == "smaller":
        return inter / np.minimum(area_a, area_b)
    return inter / (area_a + area_b - inter)


def box_moved(old, new):
    """How far a box moved: the largest change of its centre (x or y) or side, over the old side."""
    old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    centre_change = np.abs((new[:2] + new[2:] / 2) - (old[:2] + old[2:] / 2))
    return float(max(centre_change.max(), abs(new[2] - old[2])) / max(old[2], 1.0))


# ---------------------------------------------------------------------------------------------
# Tilted faces. A face is cropped with a box and an angle: crop_matrix(box, size, angle=roll)
# turns the crop by `roll` degrees about its centre, the same rotation training augments with, so
# a face whose eye line is at `roll` degrees comes out with its eyes level.

def eye_roll(keypoints):
    """The face's roll in degrees: the angle of the line from the eye of points 36-41 (the one on
    the image's left when the face is upright) to the other (42-47), line_roll."""
    return float(line_roll(keypoints[36:42].mean(0), keypoints[42:48].mean(0)))


def line_roll(left, right):
    """Degrees of the line from `left` to `right` ((..., 2) arrays: one eye, then the other), in
    image coordinates (y down): 0 for level eyes, positive when the face is turned clockwise on
    screen, +-180 upside down."""
    dx, dy = np.moveaxis(np.asarray(right) - left, -1, 0)
    return np.degrees(np.arctan2(dy, dx))


def turn_beyond(roll, max_roll):
    """The angle a face's crop is turned by: its roll beyond +-max_roll (0 within it), so faces
    within a few degrees of level are cropped as they are."""
    return roll - np.clip(roll, -max_roll, max_roll)


def angle_between(a, b):
    """a - b in degrees, the short way round: in [-180, 180)."""
    return (a - b + 180.0) % 360.0 - 180.0


def box_for_crop_centre(centre, side, shift=CROP_SHIFT):
    """The square box of this side whose crop (crop_matrix) is centred on `centre`."""
    return np.array([centre[0] - side / 2, centre[1] - shift * side - side / 2, side, side])


def crop_centre(box, shift=CROP_SHIFT):
    """Where crop_matrix centres the crop of a box: shift * h below the box centre."""
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2 + shift * h])


def upright_box(keypoints, max_roll=5.0):
    """(box, angle) for the next crop of a face with these keypoints: the box keypoints_to_box
    would give if the face were turned by `angle`, and that angle, which is the eye line's roll
    beyond +-max_roll. Faces within a few degrees of level are cropped as they are (angle 0, the
    crops the network saw most of in training, where a full turn measured slightly worse), and
    beyond that turned just far enough: continuous in the roll (except at +-180 degrees, where the
    residual flips from +max_roll to -max_roll), so tracked faces do not jump at a threshold."""
    angle = float(turn_beyond(eye_roll(keypoints), max_roll))
    if angle == 0:
        return keypoints_to_box(keypoints), 0.0
    pivot = (keypoints.min(0) + keypoints.max(0)) / 2
    turn = cv2.getRotationMatrix2D((float(pivot[0]), float(pivot[1])), angle, 1.0)
    turned_box = keypoints_to_box(transform_points(keypoints, turn))
    centre = transform_points(crop_centre(turned_box, HAAR_BOX_RAISE)[None], invert_matrix(turn))[0]
    return box_for_crop_centre(centre, turned_box[2], HAAR_BOX_RAISE), angle
