"""Find every face in an image or video and predict its 68 keypoints.

    python detect.py                                  # scikit-image's astronaut -> outputs/astronaut.jpg
    python detect.py photo.jpg photos/ clip.mp4 --json keypoints.jsonl
    python detect.py --camera 0 --out outputs/
    python detect.py photo.jpg --backend onnx         # onnxruntime, no PyTorch (python export.py first)

As a library:

    detector = KeypointDetector()          # loads the shipped model and the Haar cascade, once
    detector = KeypointDetector(backend="onnx")    # the same on onnxruntime (saved_models/*.onnx)
    faces = detector.detect(rgb_image)     # [Face(box=(x, y, w, h), keypoints=(68, 2))], image pixels
    tracker = FaceTracker(detector, fps=30)
    faces = tracker(gray_frame)            # the same, per video frame: tracked and smoothed

Faces come from OpenCV's frontal-face Haar cascade (the course's detector); each box becomes the
same crop the network was trained on (data_load.crop_matrix), all faces of an image go through
the CNN as one batch, and the keypoints are mapped back to original-image pixels. On video the
Haar cascade runs every few frames only; in between, each face's box comes from its keypoints in
the previous frame, and a One Euro filter per face removes the frame-to-frame jitter.

The network runs on one of two backends with the same NumPy interface: PyTorch (the .pt model,
models.load_model) or onnxruntime (the .onnx file `python export.py` writes). PyTorch is imported
only by the torch backend: with `--backend onnx` this module needs NumPy, OpenCV and onnxruntime
(the crop comes from face_crop.py, not data_load.py, for that reason).
"""

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from face_crop import (
    FLIP_PERMUTATION,
    IMAGE_EXTENSIONS,
    DataError,
    crop_matrix,
    denormalize_keypoints,
    invert_matrix,
    keypoints_to_box,
    load_image,
    native_stderr_captured,
    transform_points,
    warp_face,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "saved_models", "keypoints_model.pt")
DEFAULT_ONNX_MODEL = os.path.join(HERE, "saved_models", "keypoints_model.onnx")  # python export.py
HAAR_CASCADE = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")


@dataclass
class Face:
    box: np.ndarray        # (4,) x, y, w, h in image pixels
    keypoints: np.ndarray  # (68, 2) x, y in image pixels
    track_id: int = -1     # video only: the same face keeps its id from frame to frame


class FaceDetector:
    """OpenCV's Haar frontal-face cascade. Images larger than `max_side` are downscaled for
    detection only; boxes always come back in original pixels.

    When the first pass finds no face at all, a second, more sensitive pass (`retry`: finer
    scale steps, fewer neighbours) runs before giving up: on the 770 labelled test images it finds
    6 of the 8 faces the first pass misses, and it costs nothing on images where a face was found.
    """

    def __init__(self, scale_factor=1.2, min_neighbors=2, min_size=30, max_side=1024,
                 cascade=HAAR_CASCADE, retry=(1.05, 1)):
        self.cascade = cv2.CascadeClassifier(cascade)
        if self.cascade.empty():
            raise RuntimeError(f"{cascade}: could not load the Haar cascade")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size, self.max_side, self.retry = min_size, max_side, retry

    def __call__(self, gray):
        scale = min(1.0, self.max_side / max(gray.shape[:2]))
        small = gray if scale == 1 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                   interpolation=cv2.INTER_AREA)
        min_size = (max(1, int(round(self.min_size * scale))),) * 2
        boxes = self.cascade.detectMultiScale(small, self.scale_factor, self.min_neighbors, minSize=min_size)
        if len(boxes) == 0 and self.retry:
            boxes = self.cascade.detectMultiScale(small, *self.retry, minSize=min_size)
        return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / scale


def to_gray(image):
    """RGB (or already gray) uint8 image -> gray uint8."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


# ---------------------------------------------------------------------------------------------
# The network, on either backend: a float32 (N, 1, S, S) array of crops in [0, 1] goes in, a
# (N, 136) array of normalised keypoints comes out.

class TorchModel:
    """The PyTorch network from a .pt file (models.load_model). torch is imported here, when this
    backend is used, so that the onnx backend never loads it.

    `model` is the network as saved (what Notebook 3 prints); predictions run on
    models.inference_copy of it (batch norm merged into the convolutions, channels_last), which
    gives the same keypoints about 30 % faster, unless `fuse` is False."""

    def __init__(self, model, meta=None, fuse=True):
        from models import inference_copy
        self.model, self.meta, self.fuse = model, meta, fuse
        self.runner = inference_copy(model) if fuse else model

    @classmethod
    def load(cls, path):
        from models import load_model
        return cls(*load_model(path))

    def __call__(self, batch):
        import torch
        x = torch.from_numpy(batch)
        if self.fuse:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.runner(x).numpy()


class OnnxModel:
    """The network exported by export.py, on onnxruntime; the metadata (input size, crop...) comes
    from the ONNX file's metadata_props. `threads` sets onnxruntime's intra- and inter-op threads
    (0: onnxruntime's default, one per physical core)."""

    def __init__(self, path, threads=0):
        if not os.path.isfile(path):
            raise DataError(f"{path}: no such ONNX model (write it with `python export.py`)")
        try:
            import onnxruntime
        except ImportError:
            raise DataError("the onnx backend needs onnxruntime: pip install -r requirements.txt") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        try:
            self.model = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime has no public exception base class
            raise DataError(f"{path}: not a readable ONNX model ({str(e).strip().splitlines()[0]})") from None
        try:  # export.py stores each metadata value as JSON
            self.meta = {k: json.loads(v) for k, v in self.model.get_modelmeta().custom_metadata_map.items()}
        except ValueError:
            self.meta = {}
        if not {"input_size", "crop_margin", "crop_shift"} <= set(self.meta):
            raise DataError(f"{path}: no facial-keypoints metadata (export it with `python export.py`)")
        self.input_name = self.model.get_inputs()[0].name

    def __call__(self, batch):
        return self.model.run(None, {self.input_name: batch})[0]


BACKENDS = {"torch": TorchModel.load, "onnx": OnnxModel}
DEFAULT_MODELS = {"torch": DEFAULT_MODEL, "onnx": DEFAULT_ONNX_MODEL}


def load_backend(backend="torch", model_path=None):
    """The network on a backend ("torch" or "onnx") from its file (default: the shipped one)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return BACKENDS[backend](model_path or DEFAULT_MODELS[backend])


def predict_normalized(model, crops, flip_average=False):
    """(N, 1, S, S) crops in [0, 1] -> (N, 68, 2) keypoints in [-1, 1] crop coordinates, NumPy.

    `model` is a TorchModel or OnnxModel (a PyTorch module is used as it is). With
    flip_average the mirrored crops are predicted too, mapped back (x -> -x, left/right points
    swapped) and averaged with the direct prediction: a little more accurate, twice the work.
    """
    if not isinstance(model, (TorchModel, OnnxModel)):
        model = TorchModel(model, fuse=False)
    crops = np.asarray(crops, dtype=np.float32)
    n = crops.shape[0]
    batch = np.concatenate([crops, crops[..., ::-1]]) if flip_average else crops
    pred = model(np.ascontiguousarray(batch)).reshape(-1, 68, 2)
    if flip_average:
        mirrored = pred[n:, FLIP_PERMUTATION] * np.array([-1, 1], dtype=pred.dtype)
        pred = (pred[:n] + mirrored) / 2
    return pred


# ---------------------------------------------------------------------------------------------
# The pipeline: faces, crops, network, keypoints in image pixels.

@contextmanager
def stopwatch(seconds, stage):
    """Add the time spent in the block to seconds[stage]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - start


class KeypointDetector:
    """Faces -> crops -> keypoints, with the model and the face detector loaded once.

    With `refine`, each face is cropped a second time from the box its first keypoints imply
    (data_load.keypoints_to_box) and predicted again: twice the CNN work, a crop centred on the
    face whatever the detector's box. `seconds` accumulates the time spent per stage (detection,
    crop, cnn) for benchmarks. `backend` is "torch" (the .pt model; `self.model` is the PyTorch
    module) or "onnx" (the .onnx model on onnxruntime, no PyTorch); `model_path` defaults to the
    shipped model of that backend."""

    def __init__(self, model_path=None, face_detector=None, flip_average=True, refine=True,
                 backend="torch"):
        self.backend = load_backend(backend, model_path)
        self.model, self.meta = self.backend.model, self.backend.meta
        self.size = self.meta["input_size"]
        self.margin, self.shift = self.meta["crop_margin"], self.meta["crop_shift"]
        self.face_detector = face_detector or FaceDetector()
        self.flip_average, self.refine = flip_average, refine
        self.seconds = defaultdict(float)

    def crops(self, gray, boxes):
        """The network's input for each box: (N, 1, S, S) float32 array in [0, 1] (the training
        crops' gray / 255) and the (N, 2, 3) crop matrices."""
        matrices = [crop_matrix(b, self.size, self.margin, self.shift) for b in boxes]
        crops = np.stack([warp_face(gray, m, self.size) for m in matrices])
        return (crops.astype(np.float32) / np.float32(255.0))[:, None], matrices

    def keypoints_for_boxes(self, image, boxes, refine=None):
        """(N, 68, 2) keypoints in image pixels for the given face boxes; one CNN batch (two with
        refine, which defaults to self.refine)."""
        gray = to_gray(image)
        keypoints = self.predict_boxes(gray, boxes)
        if self.refine if refine is None else refine:
            keypoints = self.predict_boxes(gray, [keypoints_to_box(k) for k in keypoints])
        return keypoints

    def predict_boxes(self, gray, boxes):
        """One pass: crops of a gray image -> CNN -> (N, 68, 2) keypoints in image pixels."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, 68, 2))
        with stopwatch(self.seconds, "crop"):
            crops, matrices = self.crops(gray, boxes)
        with stopwatch(self.seconds, "cnn"):
            pred = predict_normalized(self.backend, crops, self.flip_average)
        pred = denormalize_keypoints(pred, self.size)
        return np.stack([transform_points(p, invert_matrix(m)) for p, m in zip(pred, matrices, strict=True)])

    def find_faces(self, gray):
        """Haar boxes (N, 4) for a gray image, timed as the detection stage."""
        with stopwatch(self.seconds, "detection"):
            return self.face_detector(gray)

    def detect(self, image):
        """Every face in an RGB (or gray) uint8 image: a list of Face, in image pixels."""
        gray = to_gray(image)
        boxes = self.find_faces(gray)
        return [Face(b, k) for b, k in zip(boxes, self.keypoints_for_boxes(gray, boxes), strict=True)]


# ---------------------------------------------------------------------------------------------
# Video: tracking and temporal smoothing.

class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) for an (N, 2) array of points.

    An exponential low-pass filter whose cutoff frequency rises with speed: a face at rest gets
    strong smoothing (no jitter), a moving face a high cutoff (little lag). Speeds are measured in
    face sizes per second (`scale` = the face's size in pixels), so one setting fits any face size.
    The defaults come from `python jitter.py`: among the settings tried, the least jitter on a
    still face with a lag under half a pixel for a face moving 2 px per frame.
    """

    def __init__(self, min_cutoff=1.0, beta=40.0, d_cutoff=1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.speed = None

    @staticmethod
    def alpha(cutoff, dt):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x, dt, scale=1.0):
        x = np.asarray(x, dtype=np.float64)
        if self.x is None:
            self.x, self.speed = x, np.zeros(len(x))
            return x
        speed = np.linalg.norm(x - self.x, axis=-1) / (dt * scale)
        a_d = self.alpha(self.d_cutoff, dt)
        self.speed = a_d * speed + (1 - a_d) * self.speed
        a = self.alpha(self.min_cutoff + self.beta * self.speed, dt)[:, None]
        self.x = a * x + (1 - a) * self.x
        return self.x


def box_iou(a, b):
    """Intersection over union of every box in a (N, 4) with every box in b (M, 4), as (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(1, -1, 4)
    w = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


def box_moved(old, new):
    """How far a box moved: the largest change of its centre (x or y) or side, over the old side."""
    old, new = np.asarray(old, dtype=np.float64), np.asarray(new, dtype=np.float64)
    centre_change = np.abs((new[:2] + new[2:] / 2) - (old[:2] + old[2:] / 2))
    return float(max(centre_change.max(), abs(new[2] - old[2])) / max(old[2], 1.0))


@dataclass
class Track:
    id: int
    box: np.ndarray          # where to crop this face in the next frame
    smoother: OneEuroFilter
    missed: int = 0          # detection rounds in a row that did not find this face


class FaceTracker:
    """Faces through a video: call it on each frame (gray or RGB uint8), get a list of Face.

    The Haar cascade runs every `detect_every` frames, or on the next frame when a face moved so
    far that its crop may have lost it; its boxes are matched to the tracks by overlap (IoU). In
    between, a face's crop box is data_load.keypoints_to_box of its keypoints in the previous
    frame: the box the Haar cascade would draw there, which costs nothing and jitters less than
    the cascade's own. A track the cascade misses in `max_missed` detection rounds in a row is
    dropped. With `smooth`, each track's keypoints go through a One Euro filter.

    A track's crop box only moves when the face moved by at least `hold` (a fraction of the box
    side) in position or size. Re-cropping at every sub-pixel wobble feeds the network's noise back
    into the next crop: the keypoints of a still face then wander slowly, a drift no low-pass filter
    removes (`python jitter.py --flip`: 0.102 px on a still face with hold 0, 0.038 px with 0.01).
    """

    def __init__(self, detector, fps=30.0, detect_every=10, smooth=True, min_cutoff=1.0, beta=40.0,
                 iou_threshold=0.3, max_missed=2, moved_iou=0.5, hold=0.01):
        self.detector, self.dt = detector, 1.0 / (fps if fps and fps > 0 else 30.0)
        self.detect_every, self.smooth = max(1, detect_every), smooth
        self.filter_args = dict(min_cutoff=min_cutoff, beta=beta)
        self.iou_threshold, self.max_missed, self.moved_iou = iou_threshold, max_missed, moved_iou
        self.hold = hold
        self.tracks, self.frame_index, self.next_id, self.detect_next = [], 0, 0, True

    def match_detections(self, gray, boxes):
        """Greedy IoU matching of detections to tracks; unmatched detections start new tracks."""
        iou = box_iou([t.box for t in self.tracks], boxes) if self.tracks else np.zeros((0, len(boxes)))
        matched_tracks, matched_boxes = set(), set()
        for flat in np.argsort(-iou, axis=None):
            i, j = np.unravel_index(flat, iou.shape)
            if iou[i, j] < self.iou_threshold:
                break
            if i not in matched_tracks and j not in matched_boxes:
                matched_tracks.add(i)
                matched_boxes.add(j)
        for i, track in enumerate(self.tracks):
            track.missed = 0 if i in matched_tracks else track.missed + 1
        self.tracks = [t for t in self.tracks if t.missed < self.max_missed]
        new_boxes = [box for j, box in enumerate(boxes) if j not in matched_boxes]
        # A new face starts from the box its Haar keypoints imply, the box it is tracked with
        # later: without this the first frames of a track drift by a pixel or two.
        for points in self.detector.keypoints_for_boxes(gray, new_boxes, refine=False):
            box = keypoints_to_box(points)
            self.tracks.append(Track(self.next_id, box, OneEuroFilter(**self.filter_args)))
            self.next_id += 1

    def __call__(self, frame):
        gray = to_gray(frame)
        if self.detect_next or self.frame_index % self.detect_every == 0:
            self.match_detections(gray, self.detector.find_faces(gray))
        self.frame_index, self.detect_next = self.frame_index + 1, False
        keypoints = self.detector.keypoints_for_boxes(gray, [t.box for t in self.tracks], refine=False)
        faces = []
        for track, points in zip(self.tracks, keypoints, strict=True):
            box = keypoints_to_box(points)
            self.detect_next |= box_iou(track.box, box)[0, 0] < self.moved_iou
            if self.smooth:
                points = track.smoother(points, self.dt, scale=box[2])
                box = keypoints_to_box(points)
            if box_moved(track.box, box) >= self.hold:
                track.box = box
            faces.append(Face(box, points, track.id))
        self.drop_duplicates()
        return faces

    def drop_duplicates(self):
        """Two tracks that converged on the same face: keep the older one."""
        keep = []
        for track in self.tracks:  # oldest first
            if track.box[2] < 8 or not np.isfinite(track.box).all():  # collapsed on a non-face
                continue
            if all(box_iou(track.box, k.box)[0, 0] < 0.5 for k in keep):
                keep.append(track)
        self.tracks = keep


# ---------------------------------------------------------------------------------------------
# Reading inputs. Bad input is a DataError: one line naming the input and the reason.

def open_video(source, name):
    """cv2.VideoCapture of a file or camera index, checked to deliver a first frame; returns the
    capture and that frame (BGR)."""
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise DataError(f"{name}: no such file")
        if os.path.getsize(source) == 0:
            raise DataError(f"{name}: empty file")
    with native_stderr_captured():
        capture = cv2.VideoCapture(source)
        ok, frame = capture.read() if capture.isOpened() else (False, None)
    if not ok:
        capture.release()
        what = "cannot open the camera" if isinstance(source, int) else "not a readable video"
        raise DataError(f"{name}: {what}")
    return capture, frame


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


# ---------------------------------------------------------------------------------------------
# Writing results.

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
    """A face as plain JSON: box [x, y, w, h] and 68 [x, y] pairs, in pixels, 2 decimals."""
    return {"box": [round(float(v), 2) for v in face.box],
            "keypoints": [[round(float(x), 2), round(float(y), 2)] for x, y in face.keypoints]}


def image_record(name, shape, faces, frame=None):
    record = {"image": name}
    if frame is not None:
        record["frame"] = frame
    record.update(width=int(shape[1]), height=int(shape[0]), faces=[face_record(f) for f in faces])
    return record


class Outputs:
    """Annotated files under `out_dir` named after their inputs, and the JSON Lines file.

    An annotated file never replaces one of the run's inputs (files, or anything inside an input
    folder) nor a file written earlier in the run: it gets a _2, _3 ... suffix instead."""

    def __init__(self, out_dir, json_path=None, inputs=()):
        self.out_dir, self.used = out_dir, set()
        self.protected = [os.path.realpath(p) for p in inputs if os.path.exists(p)]
        self.json = None
        if json_path:
            os.makedirs(os.path.dirname(json_path) or ".", exist_ok=True)
            self.json = open(json_path, "w")

    def is_input(self, path):
        """An existing file given as input or inside an input folder."""
        if not os.path.exists(path):
            return False
        path = os.path.realpath(path)
        return any(path == p or path.startswith(p + os.sep) for p in self.protected)

    def path_for(self, relative_name, ext=None):
        """out_dir/relative_name, its extension replaced by `ext` if given."""
        stem, old_ext = os.path.splitext(relative_name)
        ext = ext or old_ext
        path, n = os.path.join(self.out_dir, stem + ext), 1
        while path in self.used or self.is_input(path):
            n += 1
            path = os.path.join(self.out_dir, f"{stem}_{n}{ext}")
        self.used.add(path)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return path

    def write_record(self, record):
        if self.json:
            self.json.write(json.dumps(record) + "\n")

    def close(self):
        if self.json:
            self.json.close()


def write_image(path, bgr):
    if not cv2.imwrite(path, bgr):
        raise DataError(f"{path}: could not write the annotated image")


# ---------------------------------------------------------------------------------------------
# The command line.

def process_image(detector, outputs, image, name, out_name):
    """Detect, draw, record one image; returns the number of faces and the annotated file."""
    faces = detector.detect(image)
    out_path = outputs.path_for(out_name)
    write_image(out_path, draw_faces(image, faces))
    outputs.write_record(image_record(name, image.shape, faces))
    return len(faces), out_path


def process_video(detector, outputs, source, name, out_name, args):
    """Track faces through a video file or camera; one JSON record per frame."""
    capture, frame = open_video(source, name)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    tracker = FaceTracker(detector, fps=fps, detect_every=args.detect_every, smooth=not args.no_smooth)
    out_path = outputs.path_for(out_name, ".mp4")
    height, width = frame.shape[:2]
    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        capture.release()
        raise DataError(f"{out_path}: could not open the video for writing")
    frames, most_faces = 0, 0
    progress = tqdm(total=total, desc=os.path.basename(name), unit="frame", disable=None)
    try:
        while frame is not None:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            faces = tracker(rgb)
            writer.write(draw_faces(rgb, faces))
            outputs.write_record(image_record(name, frame.shape, faces, frame=frames))
            frames, most_faces = frames + 1, max(most_faces, len(faces))
            progress.update()
            ok, frame = capture.read()
            frame = frame if ok else None
    except KeyboardInterrupt:  # the way to stop a camera
        pass
    finally:
        progress.close()
        capture.release()
        writer.release()
    return frames, most_faces, out_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Find faces and their 68 keypoints in images, folders of images and videos.")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders (searched recursively) or videos (mp4, avi, mov); "
                             "none: scikit-image's astronaut photo")
    parser.add_argument("--out", default="outputs", help="folder for annotated images and videos")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write JSON Lines: one object per image or video frame")
    parser.add_argument("--backend", default="torch", choices=list(BACKENDS),
                        help="run the network on PyTorch (.pt) or onnxruntime (.onnx, no PyTorch needed)")
    parser.add_argument("--model", default=None,
                        help="model file (default: the shipped model, saved_models/keypoints_model.pt "
                             "or .onnx for --backend onnx)")
    parser.add_argument("--camera", type=int, default=None, metavar="N", help="read camera N (Ctrl-C stops)")
    parser.add_argument("--scale-factor", type=float, default=1.2, help="Haar cascade scale step")
    parser.add_argument("--min-neighbors", type=int, default=2, help="Haar cascade minNeighbors")
    parser.add_argument("--min-size", type=int, default=30, help="smallest face in pixels")
    parser.add_argument("--no-flip", action="store_true",
                        help="no flip averaging (faster, a bit less accurate)")
    parser.add_argument("--detect-every", type=int, default=10, metavar="K",
                        help="video: run the Haar cascade every K frames, track in between")
    parser.add_argument("--no-smooth", action="store_true", help="video: no temporal smoothing")
    args = parser.parse_args(argv)
    if args.scale_factor <= 1:
        parser.error("--scale-factor must be greater than 1")
    if args.min_neighbors < 0 or args.min_size < 1 or args.detect_every < 1:
        parser.error("--min-neighbors must be >= 0, --min-size and --detect-every >= 1")
    return args


def run_inputs(args, detector, outputs):
    """Process every input; report each bad one on stderr and go on. Returns the error count."""
    errors = 0

    def fail(error):
        nonlocal errors
        errors += 1
        tqdm.write(f"detect.py: {error}", file=sys.stderr)

    if not args.inputs and args.camera is None:
        from skimage import data
        n, out_path = process_image(detector, outputs, data.astronaut(), "skimage.data.astronaut",
                                    "astronaut.jpg")
        print(f"astronaut: {n} face{'s' * (n != 1)} -> annotated image {out_path}")
    for path in args.inputs:
        try:
            kind = input_kind(path)
            if kind == "image":
                n, out_path = process_image(detector, outputs, load_image(path), path,
                                            os.path.basename(path))
                print(f"{path}: {n} face{'s' * (n != 1)} -> {out_path}")
            elif kind == "video":
                frames, most, out_path = process_video(detector, outputs, path, path,
                                                       os.path.basename(path), args)
                print(f"{path}: {frames} frames, up to {most} face{'s' * (most != 1)} -> {out_path}")
            else:
                images = folder_images(path)
                if not images:
                    raise DataError(f"{path}: no images in this folder")
                folder_name = os.path.basename(os.path.normpath(path))
                faces = 0
                for image_path in tqdm(images, desc=folder_name, unit="image", disable=None):
                    try:
                        relative = os.path.join(folder_name, os.path.relpath(image_path, path))
                        faces += process_image(detector, outputs, load_image(image_path), image_path,
                                               relative)[0]
                    except (DataError, OSError, cv2.error) as e:
                        fail(e)
                print(f"{path}: {len(images)} images, {faces} faces -> {os.path.join(args.out, folder_name)}")
        except (DataError, OSError, cv2.error) as e:
            fail(e)
    if args.camera is not None:
        name = f"camera {args.camera}"
        try:
            frames, most, out_path = process_video(detector, outputs, args.camera, name,
                                                   f"camera{args.camera}.mp4", args)
            print(f"{name}: {frames} frames, up to {most} face{'s' * (most != 1)} -> {out_path}")
        except (DataError, OSError, cv2.error) as e:
            fail(e)
    return errors


def main(argv=None):
    """Run the command line; returns the exit status (1 if any input failed)."""
    args = parse_args(argv)
    model_errors = (DataError, OSError)  # the onnx backend reports a bad model file as a DataError
    if args.backend == "torch":
        from models import ModelFileError  # PyTorch, needed on this path anyway
        model_errors += (ModelFileError,)
    try:
        face_detector = FaceDetector(args.scale_factor, args.min_neighbors, args.min_size)
        detector = KeypointDetector(args.model, face_detector, flip_average=not args.no_flip,
                                    backend=args.backend)
        outputs = Outputs(args.out, args.json, args.inputs)
    except model_errors as e:
        print(f"detect.py: {e}", file=sys.stderr)
        return 1
    try:
        errors = run_inputs(args, detector, outputs)
    except KeyboardInterrupt:
        print("detect.py: interrupted", file=sys.stderr)
        return 130
    finally:
        outputs.close()
    if args.json:
        print(f"keypoints: {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
