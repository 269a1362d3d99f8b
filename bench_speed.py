"""bench.py's speed measurements, ours against dlib's on the same frames, and the speed table.

  latency       landmarks for one face, batch 1: our CNN forward on a 112x112 crop on PyTorch
                (models.inference_copy), on onnxruntime and on its int8 copy (export.py's files,
                when they are up to date), with flip averaging on the pipeline's backend, detect.py's
                default per-face step from a detector box and its --accurate step, and dlib's shape
                predictor call.
  detection     time per 640x480 frame: our default face detector (BlazeFace), the Haar cascade
                (detect.FaceDetector, --face-detector haar) and dlib's HOG.
  end to end    frames per second on JPEG-encoded 640x480 clips with one face (a slow pan and
                zoom over a test image): decode, detect, crop, landmarks, no drawing. Ours per
                frame (KeypointDetector.detect), with --face-detector haar, and as detect.py runs a
                video (FaceTracker: detection every few frames, tracking in between); dlib per frame.
  folder        `detect.py FOLDER --workers 1` and `--workers 2` on the labelled test images (the
                whole command), against dlib reading and detecting them in this process.
  training      train.py's throughput in images per second (default model, batch and
                augmentation, real data) per torch thread count, and the wall time of a full
                default run.

No measurement here asserts a time: the numbers are for the report, taken on whatever machine runs it.
"""

import os
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

import export
import train
from degradations import decode_jpeg, encode_jpeg
from dlib_baseline import matching_rect
from evaluate import matching_box
from facial_keypoints.backends import OnnxModel, TorchModel, predict_normalized, sha256
from facial_keypoints.detect import FaceDetector, KeypointDetector
from facial_keypoints.face_crop import keypoints_to_box, transform_points
from facial_keypoints.media import DataError, load_image, read_keypoints_csv, to_gray
from facial_keypoints.tracking import FaceTracker

HERE = os.path.dirname(os.path.abspath(__file__))
FRAME_SIZE = (640, 480)  # width, height of the speed benchmark's frames
CLIP_FRAMES = 30         # frames per synthetic clip (one second of video)
JPEG_QUALITY = 90        # a camera's or a video's frames, not a degraded upload


# ---------------------------------------------------------------------------------------------
# Test frames and timing.

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


def benchmark_clips(csv_file, images_dir, n_clips):
    """JPEG clips of the first `n_clips` labelled test images: a list of (list of JPEG buffers,
    (n_frames, 68, 2) keypoints)."""
    names, gt = read_keypoints_csv(csv_file, arrays=True)
    clips = []
    for name, keypoints in zip(names[:n_clips], gt[:n_clips], strict=True):
        frames, points = make_clip(load_image(os.path.join(images_dir, name)), keypoints)
        clips.append(([encode_jpeg(f, JPEG_QUALITY) for f in frames], points))
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

def first_face_found_by_both(detector, dlib_pipeline, clips):
    """(RGB frame, our box, dlib rect) of the first clip frame where both detect the labelled face."""
    for buffers, keypoints in clips:
        for buffer, gt in zip(buffers, keypoints, strict=True):
            rgb = decode_jpeg(buffer)
            box = matching_box(detector.face_detector(to_gray(rgb)), gt)
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


def landmark_latency(detector, accurate, dlib_pipeline, clips, repeats, models):
    """Seconds per face for the landmark step alone, batch 1: the forward pass on each backend in
    `models`, the detector's default step from a detector box and the `accurate` detector's."""
    rgb, box, rect = first_face_found_by_both(detector, dlib_pipeline, clips)
    gray = to_gray(rgb)
    crop, _ = detector.crops(gray, [box])
    calls = {f"cnn_{name}": (lambda m=model: predict_normalized(m, crop, False))
             for name, model in models.items()}
    calls.update({
        "cnn_flip": lambda: predict_normalized(detector.backend, crop, True),
        "face": lambda: detector.keypoints_for_boxes(gray, [box]),
        "face_accurate": lambda: accurate.keypoints_for_boxes(gray, [box]),
        "dlib": lambda: dlib_pipeline.keypoints(rgb, rect),
    })
    return interleaved_medians(calls, repeats)


def detection_time(detector, dlib_pipeline, clips, repeats=3):
    """Seconds per 640x480 frame for each face detector: the median over the clips' first frames
    of each frame's median."""
    per_frame, haar = [], FaceDetector()
    for buffers, _ in clips:
        rgb = decode_jpeg(buffers[0])
        gray = to_gray(rgb)
        per_frame.append(interleaved_medians({
            "ours": lambda: detector.face_detector(gray),  # noqa: B023 (called before the next frame)
            "haar": lambda: haar(gray),  # noqa: B023
            "dlib": lambda: dlib_pipeline.hog(rgb, dlib_pipeline.upsample),  # noqa: B023
            "dlib_gray": lambda: dlib_pipeline.hog(gray, dlib_pipeline.upsample),  # noqa: B023
        }, repeats, warmup=1, block=1))
    return {name: float(np.median([t[name] for t in per_frame])) for name in per_frame[0]}


def end_to_end(detector, dlib_pipeline, clips):
    """Frames per second and share of frames with a face, decode to keypoints, for each pipeline."""
    def ours_per_frame(buffers):
        return [len(detector.detect(decode_jpeg(b))) for b in buffers]

    with_haar = KeypointDetector(detector.backend_path, FaceDetector(),
                                 backend=detector.backend_name)  # the same model file

    def ours_haar(buffers):  # detect.py --face-detector haar
        return [len(with_haar.detect(decode_jpeg(b))) for b in buffers]

    def ours_video(buffers):  # a new video per clip, as detect.py handles each video
        tracker = FaceTracker(detector, fps=30)
        return [len(tracker(decode_jpeg(b))) for b in buffers]

    def dlib_per_frame(buffers):
        return [len(dlib_pipeline.detect(decode_jpeg(b))) for b in buffers]

    pipelines = {"ours": ours_per_frame, "ours_haar": ours_haar, "ours_video": ours_video,
                 "dlib": dlib_per_frame}
    return frames_per_second(clips, pipelines)


def folder_rates(dlib_pipeline, csv_file, images_dir, workers=(1, 2)):
    """Images per second on the labelled test images as one folder: `detect.py FOLDER --workers N`
    for each N (the whole command: start-up, reading, drawn copies and JSON written), and dlib's
    pipeline on the same images in this process (reading and detecting only)."""
    names, _ = read_keypoints_csv(csv_file, arrays=True)
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
    args = train.parse_args([], limit=limit)
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
        command = [sys.executable, os.path.join(HERE, "train.py"), "--out", os.path.join(folder, "model.pt")]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=HERE)
        return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The speed table.

def speed_ratio(ours, theirs, higher_is_faster=False):
    """How much faster ours is than dlib's, from times (default) or rates: '2.50x faster'."""
    ratio = ours / theirs if higher_is_faster else theirs / ours
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


LATENCY_ROWS = (("cnn_torch", "landmarks per face: CNN forward on PyTorch"),
                ("cnn_onnx", "landmarks per face: CNN forward on onnxruntime"),
                ("cnn_int8", "landmarks per face: CNN forward on onnxruntime, int8"),
                ("cnn_flip", "landmarks per face: CNN forward + flip average (default backend)"),
                ("face", "landmarks per face: default step from a detector box"),
                ("face_accurate", "landmarks per face: --accurate step from a detector box"))
DETECTION_ROWS = (("ours", "dlib", "face detection per frame (dlib on RGB)"),
                  ("ours", "dlib_gray", "face detection per frame (dlib on gray)"),
                  ("haar", "dlib", "face detection per frame, --face-detector haar (dlib on RGB)"))
END_TO_END_ROWS = (("ours", "end to end, every frame detected (frames with a face)"),
                   ("ours_haar", "end to end, every frame, --face-detector haar (frames with a face)"),
                   ("ours_video", "end to end, video tracking (frames with a face)"))


def speed_rows(latency, detection, fps, training, folder=None):
    """The speed table's rows: what, ours, dlib's, how many times faster."""
    ms = "{:.2f} ms".format
    rows = [[label, ms(1e3 * latency[key]), ms(1e3 * latency["dlib"]),
             speed_ratio(latency[key], latency["dlib"])]
            for key, label in LATENCY_ROWS if key in latency]
    rows += [[label, ms(1e3 * detection[ours]), ms(1e3 * detection[theirs]),
              speed_ratio(detection[ours], detection[theirs])] for ours, theirs, label in DETECTION_ROWS]
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
