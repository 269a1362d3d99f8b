"""Evaluate a keypoint model on a labelled set (the course CSV format).

    python evaluate.py                                   # shipped model, pipeline protocol, test split
    python evaluate.py --split unseen                    # people no default training run sees
    python evaluate.py --protocol crop --plot ced.png
    python evaluate.py --csv my.csv --images my_images/ --model saved_models/other.pt
    python evaluate.py --backend onnx                    # the exported model on onnxruntime

Protocols:
  pipeline      Haar detector -> crop -> CNN, exactly what detect.py does; a face the detector
                misses counts as a failure (infinite error).
  crop          the dataset image itself is the face crop, as the course feeds it to its network.
  labelled-box  the face box is derived from the labelled keypoints (no detector): the CNN alone.

Metrics: NME (mean point error over the outer-eye-corner distance, points 36 and 45), failure
rate at 8 % and 10 %, AUC of the cumulative error distribution (CED) up to 8 %, per-region NME.
"""

import os
import sys
import tempfile
import time

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from backends import BACKENDS
from detect import KeypointDetector
from face_crop import keypoints_to_box, transform_points
from media import (
    DataError,
    OneLineParser,
    check_writable,
    data_dir,
    data_path,
    identity_of,
    load_image,
    read_keypoints_csv,
    to_gray,
    unseen_people,
)
from metrics import format_summary, summarize

SPLITS = ("test", "unseen")


def plot_ced(curves, path, limit=0.10):
    """One cumulative-error-distribution plot; `curves` maps a label to per-face errors."""
    from matplotlib.figure import Figure  # not pyplot: works headless and leaves notebooks' plots alone
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    x = np.linspace(0, limit, 400)
    for label, errors in curves.items():
        errors = np.asarray(errors)
        ax.plot(100 * x, (errors[None, :] <= x[:, None]).mean(1), label=label)
    ax.set(xlabel="NME (%)", ylabel="fraction of faces", xlim=(0, 100 * limit), ylim=(0, 1),
           title="Cumulative error distribution")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)


def matching_box(boxes, gt_keypoints):
    """The detection that belongs to the labelled face: its centre inside the landmark box, the
    closest such centre to the landmark centre. None if the detector missed the face."""
    index = matching_index(boxes, gt_keypoints)
    return None if index is None else boxes[index]


def matching_index(boxes, gt_keypoints):
    """The index of matching_box's detection in boxes, or None."""
    if len(boxes) == 0:
        return None
    (x0, y0), (x1, y1) = gt_keypoints.min(0), gt_keypoints.max(0)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    inside = (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)
    if not inside.any():
        return None
    distance = np.linalg.norm(centres - [(x0 + x1) / 2, (y0 + y1) / 2], axis=1)
    return int(np.argmin(np.where(inside, distance, np.inf)))


def whole_image_box(width, height, margin, shift):
    """The detector box whose crop is the whole (square-padded) image: the course's input."""
    side = max(width, height) / margin
    return np.array([width / 2 - side / 2, height / 2 - side / 2 - shift * side, side, side])


def rotated(image, keypoints, degrees):
    """The image turned by `degrees` counter-clockwise about its centre (same size, black
    corners), and its keypoints turned with it: a tilted head as a camera would see it."""
    if not degrees:
        return image, keypoints
    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), degrees, 1.0)
    image = cv2.warpAffine(image, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return image, transform_points(keypoints, turn)


def predict_dataset(detector, csv_file, images_dir, protocol="pipeline", progress=True, rotate=0.0):
    """Predictions (N, 68, 2) in image pixels for each labelled image (NaN rows for misses),
    the labels, and the seconds spent in detection and in the CNN. With `rotate`, each image
    and its labels are turned by that many degrees first (see rotated)."""
    frame = read_keypoints_csv(csv_file, images_dir)  # every image checked before the long work
    gt = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2).copy()
    pred = np.full_like(gt, np.nan)
    seconds = {"detection": 0.0, "cnn": 0.0}
    for i, name in enumerate(tqdm(frame.iloc[:, 0], desc=f"evaluate ({protocol})", disable=not progress)):
        image = to_gray(load_image(os.path.join(images_dir, name)))  # once; every step takes gray
        image, gt[i] = rotated(image, gt[i], rotate)
        t = time.perf_counter()
        angle, first = 0.0, None
        if protocol == "pipeline":
            boxes, angles, found_keypoints = detector.find_faces(image)
            index = matching_index(boxes, gt[i])
            box, angle = (None, 0.0) if index is None else (boxes[index], angles[index])
            if index is not None and found_keypoints is not None:
                first = found_keypoints[index:index + 1]
        elif protocol == "crop":
            box = whole_image_box(image.shape[1], image.shape[0], detector.margin, detector.shift)
        elif protocol == "labelled-box":
            box = keypoints_to_box(gt[i])
        else:
            raise ValueError(f"unknown protocol {protocol!r}")
        seconds["detection"] += time.perf_counter() - t
        if box is None:
            continue
        t = time.perf_counter()
        pred[i] = detector.keypoints_for_boxes(image, [box], [angle], first=first)[0]
        seconds["cnn"] += time.perf_counter() - t
    return pred, gt, seconds


def unseen_split_csv(folder):
    """The unseen-people split as one labelled CSV written in `folder`: the rows of both course
    CSVs whose person is in splits/unseen_people.txt, their images named training/<name> and
    test/<name>. Returns (CSV path, the dataset folder its names are relative to)."""
    people, rows = unseen_people(), []
    for split in ("training", "test"):
        frame = read_keypoints_csv(data_path(f"{split}_frames_keypoints.csv"))
        frame = frame[frame.iloc[:, 0].map(identity_of).isin(people)].copy()
        frame.iloc[:, 0] = split + "/" + frame.iloc[:, 0]
        rows.append(frame)
    path = os.path.join(folder, "unseen_people.csv")
    pd.concat(rows).to_csv(path, header=False, index=False)
    return path, data_dir()


def evaluate(model_path=None, protocol="pipeline", csv_file=None, images_dir=None, flip_average=True,
             progress=True, backend="auto", rotate=0.0, split="test"):
    """Load the model, predict the labelled set, return the metrics dict (see summarize).
    `backend`: "auto", "torch" or "onnx" (backends.load_backend, through detect.KeypointDetector).
    Without csv_file, `split` names the set: "test" (the course test CSV) or "unseen" (people
    no default training run sees: unseen_split_csv)."""
    detector = KeypointDetector(model_path, flip_average=flip_average, backend=backend)
    with tempfile.TemporaryDirectory() as folder:
        if csv_file is None and split == "unseen":
            csv_file, images_dir = unseen_split_csv(folder)
        elif split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        csv_file = csv_file or data_path("test_frames_keypoints.csv")
        images_dir = images_dir or data_path("test")
        pred, gt, seconds = predict_dataset(detector, csv_file, images_dir, protocol, progress, rotate)
    metrics = summarize(pred, gt)
    metrics.update(pred=pred, gt=gt, seconds=seconds)
    return metrics


def main(argv=None):
    parser = OneLineParser(description="Evaluate a facial keypoint model.")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                        help="run the network on PyTorch (.pt) or onnxruntime (.onnx)")
    parser.add_argument("--protocol", default="pipeline", choices=["pipeline", "crop", "labelled-box"])
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="test: the course test CSV; unseen: the images, in both CSVs, of the people "
                             "in splits/unseen_people.txt (never in a default training run)")
    parser.add_argument("--csv", default=None, help="labelled CSV (default: the --split set)")
    parser.add_argument("--images", default=None, help="folder of the CSV's images")
    parser.add_argument("--no-flip", action="store_true", help="no flip averaging at test time")
    parser.add_argument("--plot", default=None, help="write the CED plot to this PNG")
    parser.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                        help="turn each image and its labels by DEG degrees counter-clockwise first")
    args = parser.parse_args(argv)
    if not np.isfinite(args.rotate):
        parser.error(f"--rotate {args.rotate}: give a number of degrees")
    if args.plot:
        try:
            check_writable("--plot", args.plot)
        except DataError as e:
            parser.error(str(e))
    try:
        m = evaluate(args.model, args.protocol, args.csv, args.images, flip_average=not args.no_flip,
                     backend=args.backend, rotate=args.rotate, split=args.split)
    except DataError as e:
        sys.exit(f"evaluate.py: {e}")
    label = args.protocol + ("" if args.csv or args.split == "test" else f", {args.split} people")
    print(format_summary(label + (f", rotated {args.rotate:g} degrees" if args.rotate else ""), m))
    n = max(1, m["found"])
    print(f"  time per face: detection {1000 * m['seconds']['detection'] / m['faces']:.2f} ms, "
          f"CNN {1000 * m['seconds']['cnn'] / n:.2f} ms")
    if args.plot and m["found"]:
        plot_ced({f"ours ({args.protocol})": m["errors"]}, args.plot)
        print(f"CED plot: {args.plot}")
    return m


if __name__ == "__main__":
    main()
