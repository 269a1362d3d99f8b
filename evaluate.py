"""Evaluate a keypoint model on a labelled set (the course CSV format).

    python evaluate.py                                   # shipped model, pipeline protocol, test split
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

import argparse
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from data_load import REGIONS, DataError, data_path, keypoints_to_box, load_image, read_keypoints_csv
from detect import BACKENDS, KeypointDetector, to_gray
from models import ModelFileError

AUC_LIMIT = 0.08


def nme_per_face(pred, gt):
    """Mean point-to-point error of each face over its outer-eye-corner distance (points 36, 45)."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    interocular = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) / interocular


def ced_auc(errors, limit=AUC_LIMIT, steps=1000):
    """Area under the cumulative error curve from 0 to `limit`, divided by `limit` (1 = perfect)."""
    errors = np.asarray(errors, dtype=np.float64)
    thresholds = np.linspace(0, limit, steps + 1)
    fraction = (errors[None, :] <= thresholds[:, None]).mean(1)
    return float(np.trapezoid(fraction, thresholds) / limit)


def summarize(pred, gt):
    """Metrics for (N, 68, 2) predictions; a face with no prediction (NaN) is a detector miss.

    NME and per-region NME are over the faces that were found; failure rates and AUC count a
    miss as a failure.
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    found = ~np.isnan(pred).any(axis=(1, 2))
    errors = np.full(len(gt), np.inf)
    errors[found] = nme_per_face(pred[found], gt[found])
    interocular = np.linalg.norm(gt[found, 36] - gt[found, 45], axis=-1)[:, None]
    point_errors = np.linalg.norm(pred[found] - gt[found], axis=-1) / interocular
    return {
        "faces": int(len(gt)), "found": int(found.sum()),
        "nme": 100 * float(errors[found].mean()) if found.any() else float("nan"),
        "failure_8": 100 * float((errors > 0.08).mean()),
        "failure_10": 100 * float((errors > 0.10).mean()),
        "auc_8": ced_auc(errors),
        "regions": {name: 100 * float(point_errors[:, list(idx)].mean()) for name, idx in REGIONS.items()},
        "errors": errors,
    }


def format_summary(name, m):
    regions = "  ".join(f"{k} {v:.2f}" for k, v in m["regions"].items())
    return (f"{name}: NME {m['nme']:.2f}%  failure@8% {m['failure_8']:.2f}%  failure@10% "
            f"{m['failure_10']:.2f}%  AUC@8% {m['auc_8']:.3f}  faces found {m['found']}/{m['faces']}\n"
            f"  per-region NME (%): {regions}")


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
    if len(boxes) == 0:
        return None
    (x0, y0), (x1, y1) = gt_keypoints.min(0), gt_keypoints.max(0)
    centres = boxes[:, :2] + boxes[:, 2:] / 2
    inside = (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)
    if not inside.any():
        return None
    distance = np.linalg.norm(centres - [(x0 + x1) / 2, (y0 + y1) / 2], axis=1)
    return boxes[np.argmin(np.where(inside, distance, np.inf))]


def whole_image_box(width, height, margin, shift):
    """The detector box whose crop is the whole (square-padded) image: the course's input."""
    side = max(width, height) / margin
    return np.array([width / 2 - side / 2, height / 2 - side / 2 - shift * side, side, side])


def predict_dataset(detector, csv_file, images_dir, protocol="pipeline", progress=True):
    """Predictions (N, 68, 2) in image pixels for each labelled image (NaN rows for misses),
    the labels, and the seconds spent in detection and in the CNN."""
    frame = read_keypoints_csv(csv_file)
    gt = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(len(frame), -1, 2)
    pred = np.full_like(gt, np.nan)
    seconds = {"detection": 0.0, "cnn": 0.0}
    for i, name in enumerate(tqdm(frame.iloc[:, 0], desc=f"evaluate ({protocol})", disable=not progress)):
        image = to_gray(load_image(os.path.join(images_dir, name)))  # once; every step takes gray
        t = time.perf_counter()
        if protocol == "pipeline":
            boxes = detector.face_detector(image)
            box = matching_box(boxes, gt[i])
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
        pred[i] = detector.keypoints_for_boxes(image, [box])[0]
        seconds["cnn"] += time.perf_counter() - t
    return pred, gt, seconds


def evaluate(model_path=None, protocol="pipeline", csv_file=None, images_dir=None, flip_average=True,
             progress=True, backend="torch"):
    """Load the model, predict the labelled set, return the metrics dict (see summarize).
    `backend` "onnx" runs the .onnx model on onnxruntime (detect.KeypointDetector)."""
    detector = KeypointDetector(model_path, flip_average=flip_average, backend=backend)
    csv_file = csv_file or data_path("test_frames_keypoints.csv")
    images_dir = images_dir or data_path("test")
    pred, gt, seconds = predict_dataset(detector, csv_file, images_dir, protocol, progress)
    metrics = summarize(pred, gt)
    metrics.update(pred=pred, gt=gt, seconds=seconds)
    return metrics


def main(argv=None):
    parser = argparse.ArgumentParser(description="Evaluate a facial keypoint model.")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--backend", default="torch", choices=list(BACKENDS),
                        help="run the network on PyTorch (.pt) or onnxruntime (.onnx)")
    parser.add_argument("--protocol", default="pipeline", choices=["pipeline", "crop", "labelled-box"])
    parser.add_argument("--csv", default=None, help="labelled CSV (default: the test split)")
    parser.add_argument("--images", default=None, help="folder of the CSV's images")
    parser.add_argument("--no-flip", action="store_true", help="no flip averaging at test time")
    parser.add_argument("--plot", default=None, help="write the CED plot to this PNG")
    args = parser.parse_args(argv)
    try:
        m = evaluate(args.model, args.protocol, args.csv, args.images, flip_average=not args.no_flip,
                     backend=args.backend)
    except (DataError, ModelFileError) as e:
        sys.exit(f"evaluate.py: {e}")
    print(format_summary(f"{args.protocol}", m))
    n = max(1, m["found"])
    print(f"  time per face: detection {1000 * m['seconds']['detection'] / m['faces']:.2f} ms, "
          f"CNN {1000 * m['seconds']['cnn'] / n:.2f} ms")
    if args.plot:
        plot_ced({f"ours ({args.protocol})": m["errors"]}, args.plot)
        print(f"CED plot: {args.plot}")
    return m


if __name__ == "__main__":
    main()
