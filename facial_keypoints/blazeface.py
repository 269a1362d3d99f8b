"""BlazeFace: the default face detector, a small learned network that finds faces and reads their
roll up to about 60 degrees in one pass, where the Haar cascade needs turned copies of the image.

It is MediaPipe's short-range face detector (saved_models/face_detection_short_range.tflite,
Apache-2.0, from the mediapipe wheel on PyPI: its .LICENSE file says which), exported to ONNX by
export.py (the .onnx beside it, gray input) and run on onnxruntime like the keypoint network. For
each face it gives a score, a box and six points (eyes, nose tip, mouth, ears); the eye line gives
the face's roll, so its first crop can be turned upright at once.

The network is fully convolutional: on an input of any size (a multiple of 16) it predicts a face
at every anchor of its two grids (strides 8 and 16, as MediaPipe's SSD anchors for 128 x 128).
It finds faces from about a fifth of its 128-pixel input up to the whole of it, so small faces
need the image larger: `BlazeFace` runs a pyramid, from the scale at which a face of `min_size`
pixels is SMALLEST_FACE pixels across (the image no larger than `max_side` pixels) down, a factor
PYRAMID_STEP at a time, to the whole image in 128 pixels, and merges what the levels found
(weighted non-maximum suppression, as MediaPipe does).
"""

import functools
import os

import cv2
import numpy as np

from .backends import check_model_file, onnx_session
from .face_crop import box_for_crop_centre, line_roll
from .media import DataError

HERE = os.path.dirname(os.path.abspath(__file__))
BLAZEFACE_TFLITE = os.path.join(HERE, "saved_models", "face_detection_short_range.tflite")  # the source
BLAZEFACE_MODEL = os.path.join(HERE, "saved_models", "face_detection_short_range.onnx")   # what runs
INPUT_SIZE = 128    # the input the network was trained on; smaller inputs are padded to it
GRIDS = ((8, 2), (16, 6))   # (stride, anchors per cell), MediaPipe's short-range anchors
# The pyramid: a face (Haar-box side) SMALLEST_FACE pixels across at the network's input is
# found reliably, a smaller one less often; each level is PYRAMID_STEP times smaller than the
# last. Chosen on the validation people pasted into 640x480 frames at 6 to 90 % of the frame
# height (docs/EXPERIMENTS.md).
SMALLEST_FACE = 25.6
PYRAMID_STEP = 3.0
MIN_SCORE = 0.5     # MediaPipe's own threshold
SAME_FACE_IOU = 0.3  # MediaPipe's: detections overlapping more than this are one face
# How BlazeFace's box sits on the landmarks, in the Haar box's terms (face_crop.HAAR_BOX_*): the
# box the crop expects is BOX_SCALE times BlazeFace's side, its crop centre BOX_DROP of that side
# below BlazeFace's box centre, along the face's own down axis. Medians over 600 training faces
# outside the validation and unseen people (docs/EXPERIMENTS.md).
BOX_SCALE = 1.148
BOX_DROP = 0.062


@functools.lru_cache(maxsize=16)  # a video's frames, and most photos, share a few input sizes
def anchors(height, width):
    """(N, 2) anchor centres in input pixels, in the network's output order (read-only: cached)."""
    centres = []
    for stride, per_cell in GRIDS:
        ys, xs = np.mgrid[0:height // stride, 0:width // stride]
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride + stride / 2
        centres.append(np.repeat(cells, per_cell, axis=0))
    centres = np.concatenate(centres)
    centres.flags.writeable = False
    return centres


def weighted_nms(scores, boxes, points, same_face_iou=SAME_FACE_IOU):
    """Merge detections of one face: surest first, every detection overlapping it by more than
    `same_face_iou` joins it, and the face is their score-weighted mean box and points.
    (scores (N,), boxes (N, 4) x0, y0, x1, y1, points (N, 6, 2)) -> the same for the faces."""
    order, used, faces = np.argsort(-scores), np.zeros(len(scores), bool), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    for i in order:
        if used[i]:
            continue
        dx = np.minimum(boxes[i, 2], boxes[:, 2]) - np.maximum(boxes[i, 0], boxes[:, 0])
        dy = np.minimum(boxes[i, 3], boxes[:, 3]) - np.maximum(boxes[i, 1], boxes[:, 1])
        inter = np.clip(dx, 0, None) * np.clip(dy, 0, None)
        same = (inter > same_face_iou * (area[i] + area - inter)) | (np.arange(len(scores)) == i)
        group = np.nonzero(same & ~used)[0]  # i itself too, even as a box of no area
        used[group] = True
        weights = scores[group] / scores[group].sum()
        faces.append((scores[i], weights @ boxes[group], np.tensordot(weights, points[group], axes=1)))
    if not faces:
        return np.zeros(0), np.zeros((0, 4)), np.zeros((0, 6, 2))
    return tuple(np.array(column) for column in zip(*faces, strict=True))


def check_graph(session, path):
    """DataError naming `path` when its graph is not BlazeFace's as export.py writes it: on a
    (1, 1, 128, 128) input "gray", a score and 16 numbers for each of the 896 anchors."""
    anchor_count = len(anchors(INPUT_SIZE, INPUT_SIZE))
    try:
        shapes = [out.shape for out in session.run(None, {"gray": np.zeros((1, 1, INPUT_SIZE, INPUT_SIZE),
                                                                           np.float32)})]
    except Exception:  # onnxruntime has no public exception base class: a wrong input name or shape
        shapes = None
    if shapes != [(1, anchor_count, 1), (1, anchor_count, 16)]:
        raise DataError(f"{path}: not the face detector's graph (a 'gray' image in, a score and 16 "
                        "numbers per anchor out); write it again with `python export.py`")


class BlazeFace:
    """The network and its pyramid: __call__(gray) gives every face's (score, box, roll)."""

    def __init__(self, model_path=BLAZEFACE_MODEL, min_size=30, min_score=MIN_SCORE, max_side=1024):
        check_model_file(model_path, hint=" (the face detector: write it with `python export.py`)")
        # One thread: the network is small enough that more do not pay, and OpenCV's threads,
        # which wait actively between its calls, keep the other cores busy.
        self.session = onnx_session(model_path, threads=1)
        check_graph(self.session, model_path)
        self.min_size, self.min_score, self.max_side = min_size, min_score, max_side

    def scales(self, height, width):
        """The pyramid's scales for an image of this size, largest first: none makes the image's
        long side more than `max_side` pixels (in a larger photo, as the Haar cascade's max_side,
        faces below min_size times its long side / max_side are not searched for)."""
        scale, scales = min(SMALLEST_FACE / self.min_size, self.max_side / max(height, width)), []
        while scale * max(height, width) > INPUT_SIZE:
            scales.append(scale)
            scale /= PYRAMID_STEP
        return scales + [INPUT_SIZE / max(height, width)]

    def level(self, gray, scale):
        """(scores, boxes x0, y0, x1, y1, points (N, 6, 2)) in image pixels, of the detections
        above min_score in the image resized by `scale`."""
        height, width = gray.shape[:2]
        h, w = max(1, round(height * scale)), max(1, round(width * scale))
        shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        small = cv2.resize(gray, (w, h), interpolation=shrink)
        padded_h, padded_w = (max(INPUT_SIZE, -(-side // 16) * 16) for side in (h, w))
        padded = np.full((padded_h, padded_w), -1.0, np.float32)   # black, as MediaPipe pads
        padded[:h, :w] = small / np.float32(127.5) - 1.0   # the network's input range is [-1, 1]
        logits, regression = (out[0] for out in self.session.run(None, {"gray": padded[None, None]}))
        keep = np.nonzero(logits[:, 0] >= np.log(self.min_score / (1 - self.min_score)))[0]
        centres, found = anchors(padded_h, padded_w)[keep], regression[keep]
        middle, size = centres + found[:, :2], found[:, 2:4]
        boxes = np.concatenate([middle - size / 2, middle + size / 2], axis=1) / scale
        points = (centres[:, None] + found[:, 4:16].reshape(-1, 6, 2)) / scale
        return 1 / (1 + np.exp(-logits[keep, 0].astype(np.float64))), boxes, points

    def __call__(self, gray):
        """(scores (N,), boxes (N, 4) x, y, w, h, rolls (N,) degrees) of the faces in a gray
        image. A box is the one the Haar cascade would draw on that face (BOX_SCALE, BOX_DROP),
        so the crops are those the keypoint network was trained on; a roll is the eye line's
        angle as face_crop.line_roll measures it (0 level, positive clockwise on screen)."""
        levels = [self.level(gray, scale) for scale in self.scales(*gray.shape[:2])]
        found = (np.concatenate(column) for column in zip(*levels, strict=True))
        scores, boxes, points = weighted_nms(*found)
        rolls = line_roll(points[:, 0], points[:, 1])   # MediaPipe's point 0 is the eye on the image's left
        sides = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
        down = np.stack([-np.sin(np.radians(rolls)), np.cos(np.radians(rolls))], axis=1)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 + BOX_DROP * sides[:, None] * down
        haar_boxes = [box_for_crop_centre(centre, BOX_SCALE * side)
                      for centre, side in zip(centres, sides, strict=True)]
        return scores, np.array(haar_boxes).reshape(-1, 4), rolls
