"""Benchmarks side by side with dlib, in one run: accuracy and speed -> BENCHMARKS.md.

    python bench.py                  # the labelled test images (770) and every speed measurement
    python bench.py --limit 50       # a quick check on the first 50 test images
    python bench.py --train          # also the wall time of a full default `python train.py` run

Needs the optional packages in requirements-bench.txt (`make bench` installs them and runs this).

What runs, ours against dlib's 68-point pipeline (HOG frontal-face detector, upsample 1, then the
shape predictor from the `face_recognition_models` package, on the RGB image as dlib documents it):
  accuracy      evaluate.py's pipeline protocol for ours (the same numbers as `python evaluate.py`),
                the same protocol for dlib: the detection matching the labelled face
                (evaluate.matching_box) goes to the landmark model, a miss counts as a failure.
                dlib raw, and dlib plus a per-point offset fitted on --dlib-fit-images training
                images (the course data's labelling convention is not 300-W's; face_frame).
  latency       landmarks for one face, batch 1, --threads threads (dlib is single-threaded):
                our CNN forward on a 112x112 crop on PyTorch (models.inference_copy), on
                onnxruntime and on its int8 copy (export.py's files, when they are up to date),
                with flip averaging on the pipeline's backend, detect.py's per-face step from a
                detector box and after the symmetry ranking, and dlib's shape predictor call.
  detection     time per 640x480 frame: the Haar cascade (detect.FaceDetector) and dlib's HOG.
  end to end    frames per second on JPEG-encoded 640x480 clips with one face (a slow pan and
                zoom over a test image): decode, detect, crop, landmarks, no drawing. Ours per
                frame (KeypointDetector.detect) and as detect.py runs a video (FaceTracker: Haar
                every few frames, tracking in between), and with --upright-only; dlib per frame.
  folder        `detect.py FOLDER --workers 1` and `--workers 2` on the labelled test images (the
                whole command), against dlib reading and detecting them in this process.
  unseen people both pipelines, the same protocol, on the images (both CSVs) of the people in
                splits/unseen_people.txt, whom no default training run sees; whether this model's
                training saw them is read from its metadata (trained_on_unseen).
  tilted heads  both pipelines on the test images turned by each of ROLL_ANGLES, and each face
                detector option's share of faces found at DETECTOR_ROLLS (--no-roll skips them).
  degraded      both pipelines on degraded copies of the test images, one per evaluate.DEGRADATIONS
                (blur, half size, dark and noisy, JPEG; --no-degraded skips them).
  training      train.py's throughput in images per second (default model, batch and
                augmentation, real data) on one thread and on PyTorch's default thread count (what
                `python train.py` uses), and with --train the wall time of a full default run,
                its model written to a temporary folder.
"""

import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import evaluate
import export
import train
from facial_keypoints.backends import DEFAULT_MODEL, OnnxModel, TorchModel, predict_normalized, sha256
from facial_keypoints.detect import FaceDetector, KeypointDetector
from facial_keypoints.face_crop import keypoints_to_box, transform_points
from facial_keypoints.media import (
    DataError,
    OneLineParser,
    data_path,
    identity_of,
    load_image,
    read_keypoints_csv,
    to_gray,
    unseen_people,
)
from facial_keypoints.tracking import FaceTracker
from metrics import format_summary, summarize
from models import ModelFileError

HERE = os.path.dirname(os.path.abspath(__file__))
INSTALL_HINT = "pip install -r requirements-bench.txt (or run `make bench`)"
DLIB_UPSAMPLE = 1            # dlib's documented setting: finds faces down to about 40 px
FRAME_SIZE = (640, 480)      # width, height of the speed benchmark's frames
CLIP_FRAMES = 30             # frames per synthetic clip (one second of video)
JPEG_QUALITY = 90
OURS = "ours (Haar + CNN)"
DLIB_DETECTOR = "dlib HOG"
ROLL_ANGLES = (0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0)   # tilted heads: accuracy of both pipelines
DETECTOR_ROLLS = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)         # tilted heads: faces found per detector
DLIB = "dlib (HOG + shape predictor)"
UNSEEN_SPLIT_DATE = "2026-12-02"  # splits/unseen_people.txt: train.py trained on everyone before it


# ---------------------------------------------------------------------------------------------
# dlib's pipeline.

def dlib_model_path():
    """dlib's 68-point model as shipped by face_recognition_models. Found without importing the
    package: its __init__ needs pkg_resources, which recent setuptools no longer provides."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"face_recognition_models is not installed: {INSTALL_HINT}")
    path = os.path.join(spec.submodule_search_locations[0], "models", "shape_predictor_68_face_landmarks.dat")
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing from the face_recognition_models package")
    return path


def rect_to_box(rect):
    """A dlib rectangle -> (x, y, w, h) floats, the layout of our detector's boxes."""
    return np.array([rect.left(), rect.top(), rect.width(), rect.height()], dtype=np.float64)


def shape_to_points(shape):
    """A dlib full_object_detection -> (68, 2) float array of x, y."""
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class DlibPipeline:
    """dlib's HOG face detector, then its shape predictor on each face; `hog` and `predictor`
    can be stand-ins with the same call signatures (tests)."""

    def __init__(self, hog=None, predictor=None, upsample=DLIB_UPSAMPLE):
        if hog is None or predictor is None:
            try:
                import dlib
            except ImportError:
                raise DataError(f"dlib is not installed: {INSTALL_HINT}") from None
            hog = dlib.get_frontal_face_detector() if hog is None else hog
            predictor = dlib.shape_predictor(dlib_model_path()) if predictor is None else predictor
        self.hog, self.predictor, self.upsample = hog, predictor, upsample

    def find_faces(self, image):
        """dlib rectangles and the same faces as an (N, 4) array of x, y, w, h."""
        rects = list(self.hog(image, self.upsample))
        return rects, np.array([rect_to_box(r) for r in rects]).reshape(-1, 4)

    def keypoints(self, image, rect):
        return shape_to_points(self.predictor(image, rect))

    def detect(self, image):
        """Every face: a list of ((4,) box, (68, 2) keypoints), like KeypointDetector.detect."""
        rects, boxes = self.find_faces(image)
        return [(box, self.keypoints(image, rect)) for rect, box in zip(rects, boxes, strict=True)]


def matching_rect(rects, boxes, gt_keypoints):
    """The dlib rectangle of the labelled face (evaluate.matching_box's choice), or None."""
    index = evaluate.matching_index(boxes, gt_keypoints)
    return None if index is None else rects[index]


def dlib_predict_dataset(pipeline, csv_file, images_dir, progress=True, rotate=0.0, degrade=None):
    """evaluate.predict_dataset's pipeline protocol with dlib: (N, 68, 2) predictions with NaN
    rows for misses, and the labels (each image and its labels turned by `rotate` degrees, then
    degraded by evaluate.degraded with `degrade`, on the RGB image)."""
    frame = read_keypoints_csv(csv_file)
    gt = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2).copy()
    pred = np.full_like(gt, np.nan)
    for i, name in enumerate(tqdm(frame.iloc[:, 0], desc="evaluate (dlib)", disable=not progress)):
        image, gt[i] = evaluate.rotated(load_image(os.path.join(images_dir, name)), gt[i], rotate)
        image, gt[i] = evaluate.degraded(image, gt[i], degrade, i)
        rect = matching_rect(*pipeline.find_faces(image), gt[i])
        if rect is not None:
            pred[i] = pipeline.keypoints(image, rect)
    return pred, gt


def face_frame(points):
    """A face's own frame from its (68, 2) points: origin the midpoint of the eye centres (means of
    points 36-41 and 42-47), x axis from the first eye centre to the second, unit length their
    distance. Returns (origin, rotation, scale); rotation's columns are the frame's x and y axes in
    image coordinates, so image point = origin + scale * rotation @ frame point."""
    first, second = points[36:42].mean(0), points[42:48].mean(0)
    scale = float(np.linalg.norm(second - first))
    cos, sin = (second - first) / scale
    return (first + second) / 2, np.array([[cos, -sin], [sin, cos]]), scale


def fit_point_offsets(predicted_list, labels_list):
    """The mean residual (label - predicted) of each point in each predicted face's own frame
    (face_frame of the prediction, never of the label): a (68, 2) offset for apply_point_offsets."""
    residuals = []
    for predicted, labels in zip(predicted_list, labels_list, strict=True):
        _, rotation, scale = face_frame(predicted)
        residuals.append((labels - predicted) @ rotation / scale)  # each row: rotation.T @ r / scale
    return np.mean(residuals, axis=0)


def apply_point_offsets(points, offsets):
    """(68, 2) points plus `offsets` (frame units) mapped through the points' own face_frame; a
    miss (NaN points) stays NaN."""
    _, rotation, scale = face_frame(points)
    return points + scale * offsets @ rotation.T


def fit_dlib_offsets(pipeline, csv_file, images_dir, n_images, folder):
    """fit_point_offsets on dlib's faces in `n_images` evenly spaced rows of a labelled CSV
    (subset_csv, spaced), leaving out the people of the unseen-people split, on whom both
    pipelines are scored: (offsets, {"images", "step", "found"})."""
    seen = os.path.join(folder, "seen_" + os.path.basename(csv_file))
    frame = read_keypoints_csv(csv_file)
    frame[~frame.iloc[:, 0].map(identity_of).isin(unseen_people())].to_csv(seen, index=False)
    subset = subset_csv(seen, n_images, folder, spaced=True)
    pred, gt = dlib_predict_dataset(pipeline, subset, images_dir)
    found = ~np.isnan(pred).any(axis=(1, 2))
    if not found.any():
        raise DataError(f"dlib found none of the {len(gt)} faces in {subset}: no offset to fit")
    step = max(1, len(read_keypoints_csv(seen)) // n_images)
    return fit_point_offsets(pred[found], gt[found]), {"images": len(gt), "step": step,
                                                       "found": int(found.sum())}


# ---------------------------------------------------------------------------------------------
# Test frames and timing.

def subset_csv(csv_file, limit, folder, spaced=False):
    """The first `limit` rows of a keypoints CSV as a new CSV in `folder` (the file itself if 0);
    with `spaced`, the first `limit` of every k-th row, k = rows // limit (at least 1)."""
    if not limit:
        return csv_file
    frame = read_keypoints_csv(csv_file)
    step = max(1, len(frame) // limit) if spaced else 1
    stem = os.path.splitext(os.path.basename(csv_file))[0]
    path = os.path.join(folder, f"{stem}_every_{step}_first_{limit}.csv")
    frame.iloc[::step].iloc[:limit].to_csv(path, index=False)
    return path


def make_clip(image, keypoints, n_frames=CLIP_FRAMES, size=FRAME_SIZE, face_height=0.45):
    """A slow pan and zoom over the labelled face of `image` as `n_frames` RGB frames of `size`
    (w, h), the face box starting at `face_height` of the frame height (a webcam at arm's length),
    and the keypoints in each frame. Where the image does not reach, the frame shows a smooth
    blend of the image's colours (no streaks, no second face)."""
    width, height = size
    x, y, side, _ = keypoints_to_box(keypoints)
    centre = np.array([x + side / 2, y + side / 2])
    background = cv2.resize(cv2.resize(image, (8, 6), interpolation=cv2.INTER_AREA), size,
                            interpolation=cv2.INTER_LINEAR)
    frames, points = [], []
    for t in np.linspace(0, 1, n_frames):
        zoom = face_height * height / side * (1 + 0.15 * t)
        cx, cy = centre + side * np.array([0.10 * np.sin(2 * np.pi * t), 0.05 * np.sin(np.pi * t)])
        matrix = np.array([[zoom, 0, width / 2 - zoom * cx], [0, zoom, height / 2 - zoom * cy]])
        frames.append(cv2.warpAffine(image, matrix, size, dst=background.copy(), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_TRANSPARENT))
        points.append(transform_points(keypoints, matrix))
    return frames, np.array(points)


def encode_jpeg(rgb):
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                         JPEG_QUALITY])
    assert ok, "OpenCV could not encode a JPEG"
    return buffer


def decode_jpeg(buffer):
    """A JPEG frame as RGB uint8, the way a camera or video frame reaches either pipeline."""
    return cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def benchmark_clips(csv_file, images_dir, n_clips):
    """JPEG clips of the first `n_clips` labelled test images: a list of (list of JPEG buffers,
    (n_frames, 68, 2) keypoints)."""
    frame = read_keypoints_csv(csv_file).iloc[:n_clips]
    gt = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2)
    clips = []
    for name, keypoints in zip(frame.iloc[:, 0], gt, strict=True):
        frames, points = make_clip(load_image(os.path.join(images_dir, name)), keypoints)
        clips.append(([encode_jpeg(f) for f in frames], points))
    return clips


def interleaved_medians(calls, repeats, warmup=5, block=10):
    """Median seconds per call of each function in the dict `calls`, after `warmup` untimed calls.

    The functions take turns, `block` calls at a time, so that a busy machine slows them all alike
    and their ratios hold, while each block still runs with warm caches.
    """
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    while len(times[next(iter(calls))]) < repeats:
        for name, call in calls.items():
            for _ in range(min(block, repeats - len(times[name]))):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def frames_per_second(clips, pipelines):
    """For each pipeline (a function: list of JPEG buffers -> faces found per frame), frames per
    second over all clips and the share of frames with at least one face. The pipelines take turns
    clip by clip, so that a busy machine slows them all alike."""
    for process_clip in pipelines.values():
        process_clip(clips[0][0][:2])  # warm-up: first-call allocations, lazy initialisation
    seconds, found = dict.fromkeys(pipelines, 0.0), {name: [] for name in pipelines}
    for buffers, _ in clips:
        for name, process_clip in pipelines.items():
            start = time.perf_counter()
            found[name] += process_clip(buffers)
            seconds[name] += time.perf_counter() - start
    return {name: (len(found[name]) / seconds[name], float(np.mean(np.asarray(found[name]) > 0)))
            for name in pipelines}


# ---------------------------------------------------------------------------------------------
# The measurements.

def accuracy(model_path, dlib_pipeline, csv_file, images_dir, backend="auto", offsets=None):
    """Metrics (evaluate.summarize) for ours and dlib's on the same labelled images, and dlib's
    after apply_point_offsets with `offsets` (None without them)."""
    ours = evaluate.evaluate(model_path, "pipeline", csv_file, images_dir, backend=backend)
    pred, gt = dlib_predict_dataset(dlib_pipeline, csv_file, images_dir)
    corrected = None if offsets is None else summarize([apply_point_offsets(p, offsets) for p in pred], gt)
    return ours, summarize(pred, gt), corrected


def roll_accuracy(model_path, dlib_pipeline, csv_file, images_dir, angles=ROLL_ANGLES, backend="auto"):
    """{angle: (ours, dlib's)} metrics on the labelled images turned by each angle (tilted heads)."""
    results = {}
    for angle in angles:
        ours = evaluate.evaluate(model_path, "pipeline", csv_file, images_dir, rotate=angle, progress=False,
                                 backend=backend)
        theirs = summarize(*dlib_predict_dataset(dlib_pipeline, csv_file, images_dir, False, angle))
        results[angle] = ours, theirs
    return results


def degraded_accuracy(model_path, dlib_pipeline, csv_file, images_dir, names=tuple(evaluate.DEGRADATIONS),
                      backend="auto"):
    """{name: (ours, dlib's)} metrics on the labelled images degraded by each evaluate.DEGRADATIONS name."""
    results = {}
    for name in names:
        ours = evaluate.evaluate(model_path, "pipeline", csv_file, images_dir, progress=False,
                                 backend=backend, degrade=name)
        theirs = summarize(*dlib_predict_dataset(dlib_pipeline, csv_file, images_dir, False, degrade=name))
        results[name] = ours, theirs
    return results


def detector_options():
    """The face detectors tried for tilted heads, by name (each: gray image -> (N, 4) boxes)."""
    return {"Haar, upright only (`--upright-only`)": FaceDetector(rotations=()),
            "Haar, upright + copies turned 22.5 and 45 degrees (default)": FaceDetector(),
            "Haar, upright + copies turned 30 degrees": FaceDetector(rotations=(-30.0, 30.0)),
            "Haar, upright + copies turned 22.5, 45, 67.5 and 90 degrees":
                FaceDetector(rotations=(-22.5, 22.5, -45.0, 45.0, -67.5, 67.5, -90.0, 90.0))}


def detection_by_roll(dlib_pipeline, csv_file, images_dir, clips, angles=DETECTOR_ROLLS, every=5):
    """Share of the labelled faces each detector finds (evaluate.matching_box) in every `every`-th
    image turned by each angle, and its ms per 640x480 frame (median over the clips' first frames):
    {name: ({angle: found share}, seconds per frame)}."""
    frame = read_keypoints_csv(csv_file).iloc[::every]
    gt = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2)
    images = [load_image(os.path.join(images_dir, name)) for name in frame.iloc[:, 0]]
    finders = {name: (lambda image, d=d: d(to_gray(image))) for name, d in detector_options().items()}
    finders[DLIB_DETECTOR] = lambda image: dlib_pipeline.find_faces(image)[1]
    frames = [decode_jpeg(buffers[0]) for buffers, _ in clips]
    turned = {angle: [evaluate.rotated(image, points, angle)  # every detector sees the same turned images
                      for image, points in zip(images, gt, strict=True)] for angle in angles}
    results = {}
    for name, find in finders.items():
        found = {angle: float(np.mean([evaluate.matching_box(find(image), points) is not None
                                       for image, points in turned[angle]])) for angle in angles}
        seconds = np.median([interleaved_medians({"find": lambda f=f, find=find: find(f)}, 3, warmup=1,
                                                 block=1)["find"] for f in frames])
        results[name] = found, float(seconds)
    return results


def first_face_found_by_both(detector, dlib_pipeline, clips):
    """(RGB frame, our box, dlib rect) of the first clip frame where both detect the labelled face."""
    for buffers, keypoints in clips:
        for buffer, gt in zip(buffers, keypoints, strict=True):
            rgb = decode_jpeg(buffer)
            box = evaluate.matching_box(detector.face_detector(to_gray(rgb)), gt)
            rect = matching_rect(*dlib_pipeline.find_faces(rgb), gt)
            if box is not None and rect is not None:
                return rgb, box, rect
    raise DataError("no benchmark frame where both detectors find the labelled face")


def forward_models(model_path, threads):
    """The model on each backend for the forward-pass rows: {"torch": ..., "onnx": ..., "int8": ...}
    for the files that are there and were exported from model_path (export.py records the
    SHA-256 of the .pt it exported), and a note for each one left out."""
    models, notes = {"torch": TorchModel.load(model_path)}, []
    stem = os.path.splitext(model_path)[0]
    for name, path in (("onnx", stem + ".onnx"), ("int8", export.int8_path(stem + ".onnx"))):
        if not os.path.isfile(path):
            notes.append(f"{path}: no such file (python export.py writes it)")
            continue
        try:
            model = OnnxModel(path, threads=threads)
        except DataError as e:  # not an ONNX file, or onnxruntime missing: the rest of the bench still runs
            notes.append(str(e))
            continue
        if model.meta.get("source_sha256") != sha256(model_path):
            notes.append(f"{path} was exported from another model file (run python export.py)")
            continue
        models[name] = model
    return models, notes


def landmark_latency(detector, dlib_pipeline, clips, repeats, models):
    """Seconds per face for the landmark step alone, batch 1: the forward pass on each backend in
    `models`, and the detector's default steps."""
    rgb, box, rect = first_face_found_by_both(detector, dlib_pipeline, clips)
    gray = to_gray(rgb)
    crop, _ = detector.crops(gray, [box])
    first = detector.predict_boxes(gray, [box], flip_average=True)  # what the symmetry ranking gives
    calls = {f"cnn_{name}": (lambda m=model: predict_normalized(m, crop, False))
             for name, model in models.items()}
    calls.update({
        "cnn_flip": lambda: predict_normalized(detector.backend, crop, True),
        "face": lambda: detector.keypoints_for_boxes(gray, [box]),
        "face_ranked": lambda: detector.keypoints_for_boxes(gray, [box], first=first),
        "dlib": lambda: dlib_pipeline.keypoints(rgb, rect),
    })
    return interleaved_medians(calls, repeats)


def detection_time(detector, dlib_pipeline, clips, repeats=3):
    """Seconds per 640x480 frame for each face detector: the median over the clips' first frames
    of each frame's median."""
    per_frame = []
    for buffers, _ in clips:
        rgb = decode_jpeg(buffers[0])
        gray = to_gray(rgb)
        per_frame.append(interleaved_medians({
            "haar": lambda: detector.face_detector(gray),  # noqa: B023 (called before the next frame)
            "dlib": lambda: dlib_pipeline.hog(rgb, dlib_pipeline.upsample),  # noqa: B023
            "dlib_gray": lambda: dlib_pipeline.hog(gray, dlib_pipeline.upsample),  # noqa: B023
        }, repeats, warmup=1, block=1))
    return {name: float(np.median([t[name] for t in per_frame])) for name in per_frame[0]}


def end_to_end(detector, dlib_pipeline, clips):
    """Frames per second and share of frames with a face, decode to keypoints, for each pipeline."""
    def ours_per_frame(buffers):
        return [len(detector.detect(decode_jpeg(b))) for b in buffers]

    upright_only = KeypointDetector(detector.backend_path, FaceDetector(rotations=()),
                                    backend=detector.backend_name)  # the same model file

    def ours_upright(buffers):  # detect.py --upright-only
        return [len(upright_only.detect(decode_jpeg(b))) for b in buffers]

    def ours_video(buffers):  # a new video per clip, as detect.py handles each video
        tracker = FaceTracker(detector, fps=30)
        return [len(tracker(decode_jpeg(b))) for b in buffers]

    def dlib_per_frame(buffers):
        return [len(dlib_pipeline.detect(decode_jpeg(b))) for b in buffers]

    pipelines = {"ours": ours_per_frame, "ours_upright": ours_upright, "ours_video": ours_video,
                 "dlib": dlib_per_frame}
    return frames_per_second(clips, pipelines)


def folder_rates(dlib_pipeline, csv_file, images_dir, workers=(1, 2)):
    """Images per second on the labelled test images as one folder: `detect.py FOLDER --workers N`
    for each N (the whole command: start-up, reading, drawn copies and JSON written), and dlib's
    pipeline on the same images in this process (reading and detecting only)."""
    names = read_keypoints_csv(csv_file).iloc[:, 0]
    rates = {"images": len(names)}
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "images"))
        for name in names:
            os.symlink(os.path.abspath(os.path.join(images_dir, name)), os.path.join(folder, "images", name))
        for n in workers:
            start = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(HERE, "detect.py"), os.path.join(folder, "images"),
                            "--workers", str(n), "--out", os.path.join(folder, f"out{n}"),
                            "--json", os.path.join(folder, f"out{n}.jsonl")],
                           check=True, stdout=subprocess.DEVNULL)
            rates[f"ours, {n} worker{'s' * (n != 1)}"] = len(names) / (time.perf_counter() - start)
    start = time.perf_counter()
    for name in names:
        dlib_pipeline.detect(load_image(os.path.join(images_dir, name)))
    rates["dlib"] = len(names) / (time.perf_counter() - start)
    return rates


def training_throughput(steps, limit, thread_counts):
    """Images per second of train.py's optimisation loop for each torch thread count: its datasets,
    model, optimiser and loss, data loading and augmentation included. Returns ({threads: images
    per second}, batch size)."""
    args = train.parse_args(["--no-progress"] + (["--limit", str(limit)] if limit else []))
    train_set, _ = train.build_datasets(args)
    if len(train_set) == 0:
        raise DataError(f"--limit {limit}: no training images left for the throughput measurement")
    batch_size = min(args.batch_size, len(train_set))
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True)
    model, _, _ = train.initial_model(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    criterion = train.KeypointLoss(args.loss, args.input_size)

    def run(n):
        done = 0
        while done < n:
            for images, targets in loader:
                train.train_step(model, optimizer, images, targets, criterion)
                done += 1
                if done == n:
                    return

    previous_threads, rates = torch.get_num_threads(), {}
    try:
        for threads in thread_counts:
            torch.set_num_threads(threads)
            run(2)  # warm-up
            start = time.perf_counter()
            run(steps)
            rates[threads] = steps * batch_size / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
    return rates, batch_size


def full_training_seconds():
    """Wall time of a default `python train.py`, its model written to a temporary folder."""
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, os.path.join(HERE, "train.py"), "--no-progress",
                   "--out", os.path.join(folder, "model.pt")]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=HERE)
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Reporting.

def markdown_table(header, rows):
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i else (":" + "-" * (w + 1))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def speed_ratio(ours, theirs, higher_is_faster=False):
    """How much faster ours is than dlib's, from times (default) or rates: '2.50x faster'."""
    ratio = ours / theirs if higher_is_faster else theirs / ours
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


ACCURACY_ROWS = (("NME (%), points 36-45 normalised", "{nme:.2f}"),
                 ("failure rate @ 8 % (%)", "{failure_8:.2f}"),
                 ("failure rate @ 10 % (%)", "{failure_10:.2f}"),
                 ("AUC @ 0.08", "{auc_8:.3f}"),
                 ("faces found", "{found}/{faces}"))


def accuracy_rows(*columns):
    """The accuracy table's rows, one column of summarize metrics per pipeline."""
    rows = [[label, *(cell.format(**m) for m in columns)] for label, cell in ACCURACY_ROWS]
    return rows + [[f"NME {region} (%)", *(f"{m['regions'][region]:.2f}" for m in columns)]
                   for region in columns[0]["regions"]]


SHORT_ROWS = ("NME (%), points 36-45 normalised", "failure rate @ 10 % (%)", "faces found")


def short_accuracy_rows(*columns):
    """accuracy_rows' NME, failure @ 10 % and faces found rows."""
    return [row for row in accuracy_rows(*columns) if row[0] in SHORT_ROWS]


def accuracy_columns(ours, theirs, corrected, fit):
    """The accuracy tables' columns by name: ours, dlib's (raw and with the offset, when fitted)."""
    return {OURS: ours, **({f"{DLIB}, raw": theirs, offset_label(fit): corrected} if fit else {DLIB: theirs})}


def offset_label(fit):
    return f"dlib + per-point offset fitted on {fit['found']} training faces (course labelling convention)"


def offset_section(fit, ours, raw, corrected):
    """The report's paragraph on the offset column: how it was fitted and what holds after it."""
    gap = corrected["nme"] - ours["nme"]
    claim = (f"ours is {'lower' if gap > 0 else 'higher'} by {abs(gap):.2f} points" if round(gap, 2)
             else "the two are level")
    better = sum(ours["regions"][r] < corrected["regions"][r] for r in ours["regions"])
    return f"""
dlib's model was trained on 300-W, whose labelling convention differs from this data's (the nose
bridge and the jaw most), so part of its raw error is convention. The last column adds to each of
dlib's test points a per-point offset: the mean of (label - dlib's point) over the faces dlib found
in {fit["images"]} training images (one row in {fit["step"]} of `training_frames_keypoints.csv`;
dlib found {fit["found"]} of the faces), each residual taken in the face's own frame from dlib's own
points (origin between the eye centres, x along the eye line, unit the eye-centre distance) and
mapped back through each test face's frame. After the offset, dlib's NME is {corrected["nme"]:.2f} %
(raw {raw["nme"]:.2f} %) against our {ours["nme"]:.2f} %: {claim}; ours is lower on {better} of the
{len(ours["regions"])} regions, and fails on {ours["failure_10"]:.2f} % of the faces at 10 % against
{corrected["failure_10"]:.2f} % for dlib with the offset.
"""


def trained_on_unseen(meta):
    """Whether the model's training saw the unseen-people split, from its metadata: True when a
    training command gives --unseen, or for a model made before the split (train.read_checkpoint
    reads such runs as unseen=True: they trained on everyone); False for a later model none of whose
    commands gives it; None when the metadata cannot tell (no commands or no date, or weights from
    --init of a model whose date the metadata does not keep)."""
    commands = meta.get("command_history") or [c for c in [meta.get("command")] if c]
    tokens = [[t.split("=", 1)[0] for t in str(c).split()] for c in commands]
    flags = [[t for t in c if t in ("--unseen", "--no-unseen")] for c in tokens]
    if any(f and f[-1] == "--unseen" for f in flags):
        return True
    created = str(meta.get("created") or "")[:10]
    if not commands or not created:
        return None
    if created < UNSEEN_SPLIT_DATE:
        return True
    return None if any("--init" in c for c in tokens) else False


def unseen_sentence(meta):
    """The report's one sentence on what the model file's training saw of the unseen people."""
    seen, created = trained_on_unseen(meta), meta.get("created")
    if seen is None:
        return "The model's metadata does not say whether it saw these people."
    if not seen:
        return (f"The model file's training never saw these people: it was made on {created}, after the "
                f"split ({UNSEEN_SPLIT_DATE}), and none of its training commands gives `--unseen`.")
    if str(created)[:10] < UNSEEN_SPLIT_DATE:
        return (f"The model file's training saw these people: it was made on {created}, before the split "
                f"({UNSEEN_SPLIT_DATE}), when train.py trained on every training image.")
    return "The model file's training saw these people: one of its training commands gives `--unseen`."


def unseen_table(columns, meta, fit=None):
    """The unseen-people table (`columns`: accuracy_columns on that split) after unseen_sentence;
    with the offset, a line saying it was fitted without these people."""
    text = unseen_sentence(meta) + "\n\n" + markdown_table(["unseen people, pipeline", *columns],
                                                            short_accuracy_rows(*columns.values()))
    if fit:
        text += "\n\ndlib's offset is the accuracy table's, fitted on training images of other people."
    return text


def degraded_rows(clean, results):
    """A row for the clean images (`clean`: the accuracy stage's (ours, dlib's)), then one per
    degradation: each pipeline's NME, failure @ 10 %, faces found and NME change against clean."""
    def cells(m, base):
        return [f"{m['nme']:.2f}", f"{m['failure_10']:.2f}", f"{m['found']}/{m['faces']}",
                f"{m['nme'] - base['nme']:+.2f}"]
    return [[name, *cells(o, clean[0]), *cells(d, clean[1])]
            for name, (o, d) in {"none (clean, as above)": clean, **results}.items()]


def roll_rows(results):
    return [[f"{angle:+g}", f"{o['nme']:.2f}", f"{o['failure_10']:.2f}", f"{o['found']}/{o['faces']}",
             f"{d['nme']:.2f}", f"{d['failure_10']:.2f}", f"{d['found']}/{d['faces']}"]
            for angle, (o, d) in results.items()]


def detector_rows(results):
    return [[name, *(f"{100 * found[a]:.0f} %" for a in found), f"{1e3 * seconds:.0f} ms"]
            for name, (found, seconds) in results.items()]


END_TO_END_ROWS = (("ours", "end to end, every frame detected (frames with a face)"),
                   ("ours_upright", "end to end, every frame, --upright-only (frames with a face)"),
                   ("ours_video", "end to end, video tracking (frames with a face)"))


LATENCY_ROWS = (("cnn_torch", "landmarks per face: CNN forward on PyTorch"),
                ("cnn_onnx", "landmarks per face: CNN forward on onnxruntime"),
                ("cnn_int8", "landmarks per face: CNN forward on onnxruntime, int8"),
                ("cnn_flip", "landmarks per face: CNN forward + flip average (default backend)"),
                ("face", "landmarks per face: default step from a detector box (3 crops, last x5)"),
                ("face_ranked", "landmarks per face: default step after symmetry ranking (2 crops, last x5)"))


def speed_rows(latency, detection, fps, training, folder=None):
    ms = "{:.2f} ms".format
    rows = [[label, ms(1e3 * latency[key]), ms(1e3 * latency["dlib"]),
             speed_ratio(latency[key], latency["dlib"])]
            for key, label in LATENCY_ROWS if key in latency]
    rows += [[label, ms(1e3 * detection["haar"]), ms(1e3 * detection[key]),
              speed_ratio(detection["haar"], detection[key])]
             for key, label in (("dlib", "face detection per frame (dlib on RGB)"),
                                ("dlib_gray", "face detection per frame (dlib on gray)"))]
    rows += [[label, f"{fps[key][0]:.1f} fps ({100 * fps[key][1]:.0f} %)",
              f"{fps['dlib'][0]:.1f} fps ({100 * fps['dlib'][1]:.0f} %)",
              speed_ratio(fps[key][0], fps["dlib"][0], higher_is_faster=True)]
             for key, label in END_TO_END_ROWS if key in fps]
    if folder:
        one = folder["ours, 1 worker"]
        rows += [[f"folder of {folder['images']} test images: {name}", f"{rate:.1f} images/s",
                  f"{folder['dlib']:.1f} images/s", speed_ratio(rate, folder["dlib"], higher_is_faster=True)
                  + (f", {rate / one:.2f}x 1 worker" if name != "ours, 1 worker" else "")]
                 for name, rate in folder.items() if name.startswith("ours")]
    rates, batch_size = training["throughput"]
    rows += [[f"training: images per second (batch {batch_size}, {threads} thread{'s' * (threads != 1)})",
              f"{images_per_second:.0f}", "-", "-"] for threads, images_per_second in rates.items()]
    if training.get("full_seconds") is not None:
        rows.append(["training: full default `python train.py` run",
                     f"{training['full_seconds'] / 60:.1f} min", "-", "-"])
    return rows


def machine_description():
    """CPU model, cores, memory, OS and load from /proc (Linux), with portable fallbacks."""
    cpu = platform.processor() or platform.machine()
    memory = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
        memory = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"CPU": cpu, "cores": f"{os.cpu_count()} ({usable} usable by this process)", "memory": memory,
            "OS": platform.platform(), "load average (1, 5, 15 min) at the start": load_average()}


def load_average():
    """The 1, 5 and 15 minute load averages: how busy the machine was (Unix)."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "unknown"


def package_versions():
    import dlib
    return {"Python": platform.python_version(), "torch": torch.__version__, "opencv": cv2.__version__,
            "numpy": np.__version__, "dlib": dlib.__version__}


def describe_model(meta):
    """'arch net, epochs 60, val_nme 3.21, ...' from a model's metadata, the keys it has."""
    items = [(k, meta.get(k)) for k in ("arch", "epochs", "val_nme", "created")]
    text = ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in items if v is not None)
    commands = meta.get("command_history", [])
    if len(commands) > 1:  # resumed or fine-tuned: the epochs above are the last command's
        text += f", {len(commands)} training commands in its command_history"
    return text


def roll_section(tables):
    """The tilted-head part of the report (absent after --no-roll)."""
    if "roll" not in tables:
        return ""
    return f"""
## Tilted heads

The same labelled test images, each turned about its centre by the given roll (counter-clockwise
for positive angles; black corners) with its labels (`python evaluate.py --rotate DEG`); the same
pipelines and measures as above. Our detector runs the Haar cascade on the image and on copies
turned by 22.5 and 45 degrees each way, keeps each face where the network's keypoints for its crop
and its mirror image agree best, and crops it turned so the eyes are within 5 degrees of level.

{tables["roll"]}

Face detectors alone, on every 5th labelled test image turned by each roll: the share of labelled
faces found (a detection whose centre lies in the face's landmark box), and the time per 640x480
frame with one upright face (median over the clips' first frames; the turned copies always run).

{tables["detectors"]}
"""


def unseen_section(tables):
    """The unseen-people part of the report, beside the accuracy table."""
    if "unseen" not in tables:
        return ""
    return f"""
### People the model never saw

The course test set's people all appear in its training set. `splits/unseen_people.txt` names
{len(unseen_people())} people whom no default training run sees (`train.py` leaves them out unless
`--unseen`): their images in both CSVs (`python evaluate.py --split unseen`), with the same
pipelines, protocol and measures as above.

{tables["unseen"]}
"""


def degraded_section(tables):
    """The degraded-copies part of the report (absent after --no-degraded)."""
    if "degraded" not in tables:
        return ""
    notes = "\n".join(f"- {name}: {note}" for name, note in evaluate.DEGRADATION_NOTES.items())
    return f"""
## Degraded images

The same labelled test images, each degraded as a poor photo is (`python evaluate.py --degrade
NAME`; both pipelines get the same degraded RGB image), with the same pipelines and measures as
above. "NME change" is in percentage points against the clean images of the accuracy table; as
there, NME is over the faces found, so a pipeline that misses more of the hard faces can show a
lower NME: the failure rate counts the misses.

{notes}

{tables["degraded"]}
"""


def write_report(path, args, command, tables, plot_path, model_path, model_meta, machine, versions, faces,
                 n_clips):
    plot_link = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(path)))
    model_line = describe_model(model_meta)
    text = f"""# Benchmarks: ours against dlib

Written by `bench.py` ({time.strftime("%Y-%m-%d %H:%M")}); rerun `make bench` to refresh it.

Command: `{command}`
Model: `{os.path.relpath(model_path, HERE)}` ({model_line or "no metadata"})

## Accuracy

{faces} labelled test images (`test_frames_keypoints.csv`), whole pipeline: detector, then landmarks.
Ours is `python evaluate.py` (pipeline protocol, flip averaging); dlib's is its HOG frontal-face
detector (upsample {DLIB_UPSAMPLE}) and its 68-point shape predictor, with the detection that matches
the labelled face chosen the same way. NME is the mean point error over the outer-eye-corner
distance (points 36 and 45) on the faces found; failure rates and AUC count a missed face as a failure.
Lower is better except for AUC and faces found.

{tables["accuracy"]}
{tables.get("offset", "")}
![Cumulative error distribution, ours and dlib]({plot_link})
{unseen_section(tables)}{roll_section(tables)}{degraded_section(tables)}
## Speed

"ours vs dlib" says how many times faster (or slower) ours is, both measured in the same run on
the same frames; absolute times depend on the machine and on what else it is running.
Landmark latency: median over {args.repeats} calls at batch 1 after warm-up, on one face of a
640x480 frame that both detectors find; dlib's shape predictor is single-threaded. Frames:
{n_clips} clips of {CLIP_FRAMES} JPEG frames (640x480, a slow pan and zoom over a labelled test
image, one face), decoded with `cv2.imdecode`; no drawing. Detection: median time on each clip's
first frame. dlib gets the RGB frame, as its documentation does, and in the accuracy table; its
HOG detector on the gray frame is shown too. "video tracking" is tracking.py's `FaceTracker`: the
Haar cascade every 10th frame, each face's box taken from its keypoints in between. Our pipeline
runs on `--backend {args.backend}` (`{os.path.relpath(model_path, HERE)}`; "auto" is detect.py's
default). The forward-pass rows time the same network on PyTorch, on onnxruntime and on its int8 copy
(`python export.py` writes both ONNX files). "default step from a detector box" is detect.py's
per-face work given a box: a first crop, then two more crops, each from the box the last keypoints
imply (refine); only the last is flip-averaged and cut at five small shifts whose readings are
averaged (detect.CROP_SHIFTS), and its unshifted crop is the face check. When the detector's
turned copies found the face, its symmetry ranking has already run the first crop, flip-averaged,
and detect.py reuses those keypoints: the step that is left is "after the symmetry ranking".
The folder rows time the whole `detect.py FOLDER --workers N` command (start-up, drawn copies
and JSON written) against dlib reading and detecting the same images in one process. Training
throughput is shown on one thread and on PyTorch's default thread count (what `python train.py`
uses); on a machine busy with other work, several threads can be slower than one.

{tables["speed"]}

## Machine

{chr(10).join(f"- {k}: {v}" for k, v in machine.items())}
- packages: {", ".join(f"{k} {v}" for k, v in versions.items())}

## dlib's model licence

dlib's 68-point shape predictor (`shape_predictor_68_face_landmarks.dat`, installed by the
`face_recognition_models` package) was trained on the iBUG 300-W data set, whose licence excludes
commercial use: the model is licensed for non-commercial use only. It is used here only for this
comparison; nothing in this project's own pipeline depends on dlib or on that model.
"""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# ---------------------------------------------------------------------------------------------

REPORT = os.path.join(HERE, "BENCHMARKS.md")
REPORT_PLOT = os.path.join(HERE, "docs", "bench_ced.png")


def parse_args(argv=None):
    parser = OneLineParser(description="Benchmark our keypoint pipeline against dlib's.")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                        help="our pipeline's backend (detect.py's --backend)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="only the first N labelled test images (quick checks; 0 = all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads for inference timings (dlib uses one)")
    parser.add_argument("--clips", type=int, default=10,
                        help=f"{CLIP_FRAMES}-frame clips for the detection and fps numbers")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per latency number")
    parser.add_argument("--train-steps", type=int, default=30, help="optimisation steps timed for throughput")
    parser.add_argument("--train", action="store_true",
                        help="also time a full default `python train.py` run (long; model to a temp folder)")
    parser.add_argument("--no-folder", action="store_true",
                        help="skip the folder table (detect.py --workers 1 and 2 on the test images)")
    parser.add_argument("--no-roll", action="store_true",
                        help="skip the tilted-head tables (both pipelines on turned test images; minutes)")
    parser.add_argument("--no-degraded", action="store_true",
                        help="skip the degraded-images table (both pipelines on blurred, halved, dark and "
                             "JPEG copies of the test images; minutes)")
    parser.add_argument("--dlib-fit-images", type=int, default=800, metavar="N",
                        help="evenly spaced training images to fit dlib's per-point offset on (0: no offset)")
    parser.add_argument("--out", default=None,
                        help="the report to write (default: BENCHMARKS.md; outputs/bench/ with --limit)")
    parser.add_argument("--plot", default=None,
                        help="the CED plot (default: docs/bench_ced.png; outputs/bench/ with --limit)")
    args = parser.parse_args(argv)
    if min(args.limit, args.dlib_fit_images) < 0 or min(args.threads, args.clips, args.repeats,
                                                         args.train_steps) < 1:
        parser.error("--limit and --dlib-fit-images must be >= 0; --threads, --clips, --repeats, "
                     "--train-steps >= 1")
    if args.model and not args.model.lower().endswith(".pt"):  # the forward rows run it on PyTorch too
        parser.error(f"--model {args.model}: give the .pt file (its ONNX exports beside it are timed too)")
    # A partial run (--limit) is a quick check, not the committed report: it writes elsewhere unless
    # --out / --plot say otherwise.
    partial = os.path.join("outputs", "bench")
    args.out = args.out or (os.path.join(partial, "BENCHMARKS.md") if args.limit else REPORT)
    args.plot = args.plot or (os.path.join(partial, "bench_ced.png") if args.limit else REPORT_PLOT)
    return args


def run(args, command):
    default_threads = torch.get_num_threads()  # what train.py uses (its --threads 0)
    dlib_pipeline = DlibPipeline()
    versions = package_versions()
    machine = machine_description()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    images_dir = data_path("test")
    with tempfile.TemporaryDirectory() as folder:
        csv_file = subset_csv(data_path("test_frames_keypoints.csv"), args.limit, folder)
        offsets = fit = None
        if args.dlib_fit_images:
            print(f"dlib's per-point offset: dlib on {args.dlib_fit_images} training images ...", flush=True)
            offsets, fit = fit_dlib_offsets(dlib_pipeline, data_path("training_frames_keypoints.csv"),
                                            data_path("training"), args.dlib_fit_images, folder)
        ours, theirs, corrected = accuracy(args.model, dlib_pipeline, csv_file, images_dir, args.backend,
                                           offsets)
        columns = accuracy_columns(ours, theirs, corrected, fit)
        for name, metrics in columns.items():
            print(format_summary(name, metrics))
        evaluate.plot_ced({name: metrics["errors"] for name, metrics in columns.items()}, args.plot)
        print("people the model never saw: both pipelines on the unseen-people split ...", flush=True)
        unseen_csv, unseen_root = evaluate.unseen_split_csv(folder)  # both CSVs: names under the data root
        unseen_csv = subset_csv(unseen_csv, args.limit, folder)
        unseen = accuracy_columns(*accuracy(args.model, dlib_pipeline, unseen_csv, unseen_root, args.backend,
                                            offsets), fit)
        for name, metrics in unseen.items():
            print(format_summary(f"{name}, unseen people", metrics))
        print("speed: building the frames, landmark latency, detection, end to end ...", flush=True)
        clips = benchmark_clips(csv_file, images_dir, min(args.clips, args.limit or args.clips))
        rolls = detectors = None
        if not args.no_roll:
            print("tilted heads: both pipelines on turned copies of the test images ...", flush=True)
            rolls = {0.0: (ours, theirs),  # the accuracy run above is the upright row
                     **roll_accuracy(args.model, dlib_pipeline, csv_file, images_dir,
                                     angles=[a for a in ROLL_ANGLES if a], backend=args.backend)}
            detectors = detection_by_roll(dlib_pipeline, csv_file, images_dir, clips)
        degraded = None
        if not args.no_degraded:
            print("degraded images: both pipelines on degraded copies of the test images ...", flush=True)
            degraded = degraded_accuracy(args.model, dlib_pipeline, csv_file, images_dir,
                                         backend=args.backend)
            for name, (o, d) in degraded.items():
                print(format_summary(f"{OURS}, {name}", o))
                print(format_summary(f"{DLIB}, {name}", d))
        folder = None
        if not args.no_folder:
            print("the test images as a folder: detect.py --workers 1 and 2, dlib ...", flush=True)
            folder = folder_rates(dlib_pipeline, csv_file, images_dir)
    detector = KeypointDetector(args.model, backend=args.backend)
    print(f"our pipeline runs on {detector.backend_name}: {os.path.relpath(detector.backend_path, HERE)}")
    models, notes = forward_models(args.model or DEFAULT_MODEL, args.threads)
    for note in notes:
        print(f"forward-pass row left out: {note}")
    latency = landmark_latency(detector, dlib_pipeline, clips, args.repeats, models)
    detection = detection_time(detector, dlib_pipeline, clips)
    fps = end_to_end(detector, dlib_pipeline, clips)
    print("training throughput ...", flush=True)
    cv2.setNumThreads(-1)  # back to OpenCV's default, as train.py runs
    thread_counts = sorted({1, default_threads})  # one thread, and what `python train.py` uses
    training = {"throughput": training_throughput(args.train_steps, args.limit, thread_counts)}
    if args.train:
        print("full default training run ...", flush=True)
        training["full_seconds"] = full_training_seconds()

    threads = f"{args.threads} thread{'s' * (args.threads != 1)}"
    tables = {"accuracy": markdown_table(["test images, pipeline", *columns],
                                         accuracy_rows(*columns.values())),
              **({"offset": offset_section(fit, ours, theirs, corrected)} if fit else {}),
              "unseen": unseen_table(unseen, detector.meta, fit),
              "speed": markdown_table([f"speed, inference on {threads}", "ours", "dlib", "ours vs dlib"],
                                      speed_rows(latency, detection, fps, training, folder))}
    if rolls:
        tables["roll"] = markdown_table(
            ["roll (degrees)", "ours NME (%)", "ours failure @ 10 % (%)", "ours found", "dlib NME (%)",
             "dlib failure @ 10 % (%)", "dlib found"], roll_rows(rolls))
        tables["detectors"] = markdown_table(["face detector", *(f"{a:g} deg" for a in DETECTOR_ROLLS),
                                              "per 640x480 frame"], detector_rows(detectors))
    if degraded:
        tables["degraded"] = markdown_table(
            ["degradation", "ours NME (%)", "ours failure @ 10 % (%)", "ours found", "ours NME change",
             "dlib NME (%)", "dlib failure @ 10 % (%)", "dlib found", "dlib NME change"],
            degraded_rows((ours, theirs), degraded))
    print("\n" + "\n\n".join(tables.values()))
    machine["load average at the end"] = load_average()
    write_report(args.out, args, command, tables, args.plot, detector.backend_path, detector.meta, machine,
                 versions, ours["faces"], len(clips))
    print(f"\nwrote {args.out} and {args.plot}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        run(args, shlex.join(["python", "bench.py", *argv]))
    except (DataError, ModelFileError, subprocess.CalledProcessError) as e:
        sys.exit(f"bench.py: {e}")


if __name__ == "__main__":
    main()
