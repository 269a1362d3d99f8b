"""Evaluate a keypoint model on a labelled set (the course CSV format).

    python evaluate.py                                   # shipped model, pipeline protocol, test split
    python evaluate.py --split unseen                    # people no default training run sees
    python evaluate.py --protocol crop --plot ced.png
    python evaluate.py --csv my.csv --images my_images/ --model saved_models/other.pt
    python evaluate.py --backend onnx                    # the exported model on onnxruntime
    python evaluate.py --degrade jpeg                    # every image re-encoded at JPEG quality 10 first
    python evaluate.py --rotate 15 --worst 5             # and the five faces with the largest error
    python evaluate.py --accurate                        # detect.py --accurate: more passes per face
    python evaluate.py --csv wild.csv --images training/ --convention course   # not the labels' head

Protocols:
  pipeline      face detector -> crop -> CNN, exactly what detect.py does; a face the detector
                misses counts as a failure (infinite error).
  crop          the dataset image itself is the face crop, as the course feeds it to its network.
  labelled-box  the face box is derived from the labelled keypoints (no detector): the CNN alone.

Metrics: NME (mean point error over the outer-eye-corner distance, points 36 and 45), failure
rate at 8 % and 10 %, AUC of the cumulative error distribution (CED) up to 8 %, per-region NME.

Conventions: a two-head model reads the keypoints twice, in the course's labelling and in 300-W's;
the head scored is the one matching the labels. A set is in 300-W's labelling when every image's
file name starts as get_data.py names the faces it imports from 300-W's layout, `<source>-`
(lowercase letters and digits, a hyphen: fkp-wild's `lfpw-...`, `helen-...`, `afw-...`), and in the
course's otherwise (the course CSVs name their images after the person: `Abdel_Aziz_Al-Hakim_02.jpg`).
A model without the labels' head (a one-head course Net) is scored on the head it has, and the
report says so; `--convention` scores the head it names whatever the labels.
"""

import os
import sys
import tempfile
import time

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from degradations import expose, gaussian_blur, jpeg_round_trip, shrink
from facial_keypoints.backends import BACKENDS, TWO_HEAD_CONVENTIONS, ConventionError, use_convention
from facial_keypoints.detect import MAX_FLIP_DISAGREEMENT, KeypointDetector
from facial_keypoints.face_crop import keypoints_to_box, transform_points
from facial_keypoints.media import (
    DataError,
    OneLineParser,
    check_stop,
    data_dir,
    data_path,
    identity_of,
    load_image,
    read_keypoints_csv,
    stop_between_steps,
    to_gray,
    unseen_people,
    wild_source,
)
from facial_keypoints.outputs import SHIPPED_MODELS, holds_plot, reserve_file_output
from metrics import format_summary, summarize

SPLITS = ("test", "unseen")
PROTOCOLS = ("pipeline", "crop", "labelled-box")

# Degraded copies (--degrade): each test image made worse the way a poor photo is, to see what the
# pipeline loses, with degradations.py's operations (training's --photo-augment draws them at random
# strengths). The strengths are chosen to be clearly visible yet leave a face a person still reads.
BLUR_SIGMA = 2.0    # px: an out-of-focus or shaken phone photo, the eye corners soft but still there
HALF_SCALE = 0.5    # a face at half the resolution, as from farther away or a smaller camera
DARK_GAIN = 0.3     # a dim room: the pixel values at 30 %, so the face spans few grey levels
DARK_NOISE = 2.0    # grey levels: the sensor noise that a dim photo shows over that small range
JPEG_QUALITY = 10   # a heavily compressed upload: 8x8 block artefacts on the face


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
    root, ext = os.path.splitext(path)
    tmp = f"{root}.tmp{ext}"  # written whole, then renamed: a full disk leaves the old plot as it was
    try:
        fig.savefig(tmp, dpi=110, format=ext[1:].lower() or "png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_format_problem(path):
    """Why matplotlib cannot write a plot to `path`, by its extension (none: PNG), or None."""
    from matplotlib.figure import Figure
    ext = os.path.splitext(path)[1][1:].lower()
    formats = Figure().canvas.get_supported_filetypes()
    if ext and ext not in formats:
        return f"--plot {path}: matplotlib writes no .{ext} files; use .{', .'.join(sorted(formats))}"
    return None


def reserve_plot(parser, args):
    """Refuse, before any work, a --plot that matplotlib cannot write, that names what the run
    reads (the CSV, the images, the dataset, the model, the shipped models), a folder, a device or
    an existing file that is not a plot (outputs.holds_plot: a photo; the plot is renamed over it),
    or lies in a folder that cannot be written."""
    problem = plot_format_problem(args.plot)
    if problem:
        parser.error(problem)
    dataset = [] if args.csv and args.images else [data_dir()]
    try:
        reserve_file_output("--plot", args.plot, holds_plot, "a plot", [args.csv, args.images, *dataset],
                            [args.model, SHIPPED_MODELS])
    except DataError as e:
        parser.error(str(e))


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


def blurred(image, keypoints, index):
    """An out-of-focus photo: a Gaussian blur of BLUR_SIGMA px; the keypoints do not move."""
    return gaussian_blur(image, BLUR_SIGMA), keypoints


def halved(image, keypoints, index):
    """The image at HALF_SCALE of its width and height (pixel areas averaged) and its keypoints
    scaled with it. The NME is scale-free, so the face is scored in the small image's pixels.
    Pixel centres sit at whole coordinates (as in rotated), so a point x maps to
    (x + 0.5) * scale - 0.5, not x * scale: that would be a quarter-pixel bias on every point."""
    return shrink(image, HALF_SCALE), (keypoints + 0.5) * HALF_SCALE - 0.5


def darkened(image, keypoints, index):
    """A dim photo: the pixel values times DARK_GAIN plus Gaussian sensor noise of DARK_NOISE grey
    levels, drawn from a generator seeded with the image's index so that a run is repeatable."""
    noise = np.random.default_rng(index).normal(0.0, DARK_NOISE, image.shape)
    return expose(image, DARK_GAIN, noise), keypoints


def jpeg_compressed(image, keypoints, index):
    """The image encoded as a JPEG of quality JPEG_QUALITY and decoded back: a compressed upload."""
    return jpeg_round_trip(image, JPEG_QUALITY), keypoints


DEGRADATIONS = {"blur": blurred, "half": halved, "dark": darkened, "jpeg": jpeg_compressed}
DEGRADATION_NOTES = {  # for --help and the report line
    "blur": f"Gaussian blur, sigma {BLUR_SIGMA:g} px",
    "half": f"half width and height (INTER_AREA), labels scaled by {HALF_SCALE:g}",
    "dark": f"pixel values x{DARK_GAIN:g} plus noise of std {DARK_NOISE:g} grey levels",
    "jpeg": f"re-encoded as JPEG quality {JPEG_QUALITY}",
}


def degraded(image, keypoints, name, index):
    """The RGB uint8 image (and its keypoints) after the degradation `name` (a DEGRADATIONS key;
    None: unchanged); `index`, the image's row, seeds the degradations that draw noise."""
    if name is None:
        return image, keypoints
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}; choose from {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[name](image, keypoints, index)


class Protocol:
    """Our detector under one of PROTOCOLS, as predict_dataset runs a pipeline: `labelled_face`
    gives the keypoints of the labelled face in an image, or None when the detector missed it.
    The seconds spent in detection and in the CNN add up in `seconds`."""

    def __init__(self, detector, name="pipeline"):
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
        self.detector, self.name = detector, name
        self.seconds = {"detection": 0.0, "cnn": 0.0}

    def labelled_face(self, image, labels):
        gray = to_gray(image)
        start = time.perf_counter()
        box, angle, first = self.face_box(gray, labels)
        self.seconds["detection"] += time.perf_counter() - start
        if box is None:
            return None
        start = time.perf_counter()
        # the face check drops detections that show no face; the other protocols' boxes hold one
        keypoints = self.detector.keypoints_for_boxes(gray, [box], [angle], first=first,
                                                      check=self.name == "pipeline")[0]
        self.seconds["cnn"] += time.perf_counter() - start
        return keypoints

    def face_box(self, gray, labels):
        """(box, angle, keypoints the detector already predicted for it or None) of the labelled
        face; box None: the detector missed it."""
        if self.name == "crop":
            height, width = gray.shape
            return whole_image_box(width, height, self.detector.margin, self.detector.shift), 0.0, None
        if self.name == "labelled-box":
            return keypoints_to_box(labels), 0.0, None
        boxes, angles, found_keypoints = self.detector.find_faces(gray)
        index = matching_index(boxes, labels)
        if index is None:
            return None, 0.0, None
        first = None if found_keypoints is None else found_keypoints[index:index + 1]
        return boxes[index], angles[index], first


def predict_dataset(pipeline, csv_file, images_dir, progress=True, rotate=0.0, degrade=None,
                    label="evaluate"):
    """Each labelled image through `pipeline`, ours (Protocol.labelled_face) and dlib's
    (dlib_baseline) alike: a function of an RGB uint8 image and its (68, 2) labels that returns
    the labelled face's (68, 2) keypoints, or None for a miss. With `rotate`, each image and its
    labels are turned by that many degrees first (see rotated); with `degrade`, the turned image
    is then degraded (see degraded). Returns (N, 68, 2) predictions in image pixels (NaN rows for
    misses) and the labels as the pipeline saw them."""
    names, gt = read_keypoints_csv(csv_file, images_dir, arrays=True)  # every image checked first
    check_rows(csv_file, images_dir, names, gt)
    pred = np.full_like(gt, np.nan)
    # disable=None: a bar on a terminal only, as every progress bar here
    for i, name in enumerate(tqdm(names, desc=label, disable=None if progress else True)):
        check_stop()  # Ctrl-C or SIGTERM inside stop_between_steps: here, between images
        image, gt[i] = rotated(load_image(os.path.join(images_dir, name)), gt[i], rotate)
        image, gt[i] = degraded(image, gt[i], degrade, i)
        keypoints = pipeline(image, gt[i])
        if keypoints is not None:
            pred[i] = keypoints
    return pred, gt


def check_rows(csv_file, images_dir, names, keypoints):
    """DataError for an image name that leads out of images_dir (`../training/x.jpg`: another
    set's image would be scored) or a row that repeats an earlier one (it would be scored twice)."""
    for row, name in enumerate(names, 1):
        relative = os.path.normpath(name)
        if os.path.isabs(relative) or relative.split(os.sep)[0] == os.pardir:
            raise DataError(f"{csv_file}: row {row} names {name}, outside {images_dir}; name each image by "
                            f"its path inside the images folder")
    first_row = {}
    for row, key in enumerate(zip(names, (points.tobytes() for points in keypoints), strict=True), 1):
        if key in first_row:
            raise DataError(f"{csv_file}: row {row} repeats row {first_row[key]} ({key[0]}); remove one, "
                            f"or its face is scored twice")
        first_row[key] = row


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


def labels_convention(names):
    """The labelling convention of a set whose images are `names`: "300w" when every file name
    starts with a source of the in-the-wild set (media.wild_source), else "course" (see the module
    docstring)."""
    wild = [wild_source(name) is not None for name in names]
    return "300w" if wild and all(wild) else "course"


def evaluate(model_path=None, protocol="pipeline", csv_file=None, images_dir=None, flip_average=True,
             progress=True, backend="auto", rotate=0.0, split="test", degrade=None, face_check=True,
             accurate=False, convention=None):
    """Load the model, predict the labelled set, return the metrics dict (see summarize), with the
    convention of the head scored (`convention`) and that of the labels (`labels`, labels_convention).
    `convention` None scores the labels' head when the model has it, else the model's default
    (backends.default_convention); a head named that the model lacks is a backends.ConventionError.
    `backend`: "auto", "torch" or "onnx" (backends.load_backend, through detect.KeypointDetector).
    Without csv_file, `split` names the set: "test" (the course test CSV) or "unseen" (people
    no default training run sees: unseen_split_csv). `rotate` and `degrade`: see predict_dataset.
    `face_check=False` keeps the detections that detect.py's face check would drop; `accurate`
    is detect.py's --accurate (more forward passes per face)."""
    detector = KeypointDetector(model_path, flip_average=flip_average, backend=backend,
                                max_disagreement=MAX_FLIP_DISAGREEMENT if face_check else None,
                                accurate=accurate, convention=convention)
    ours = Protocol(detector, protocol)
    with tempfile.TemporaryDirectory() as folder:
        if csv_file is None and split == "unseen":
            csv_file, images_dir = unseen_split_csv(folder)
        elif split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        csv_file = csv_file or data_path("test_frames_keypoints.csv")
        images_dir = images_dir or data_path("test")
        names, _ = read_keypoints_csv(csv_file, arrays=True)
        labels = labels_convention(names)
        if convention is None and labels in detector.conventions:
            use_convention(detector.backend, labels)
        pred, gt = predict_dataset(ours.labelled_face, csv_file, images_dir, progress, rotate, degrade,
                                   label=f"evaluate ({protocol})")
    metrics = summarize(pred, gt)
    metrics.update(pred=pred, gt=gt, seconds=ours.seconds, names=names, convention=detector.convention,
                   labels=labels)
    return metrics


def convention_line(m):
    """Which head was scored, and whether the labels follow another convention."""
    if m["convention"] == m["labels"]:
        return f"  scored: the {m['convention']} head (the labels' convention)"
    return (f"  scored: the {m['convention']} head, on labels in the {m['labels']} convention: the points "
            "the two place differently count as error")


def worst_faces(m, n):
    """Lines naming the n faces with the largest error (a missed face first), worst first: the
    images that a mean over hundreds of faces hides, or that it is made of."""
    errors = m["errors"]
    return [f"  {m['names'][i]}: " + ("missed" if np.isinf(errors[i]) else f"NME {100 * errors[i]:.1f}%")
            for i in np.argsort(-errors, kind="stable")[:n]]


def main(argv=None):
    parser = OneLineParser(description="Evaluate a facial keypoint model.")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                        help="run the network on PyTorch (.pt) or onnxruntime (.onnx)")
    parser.add_argument("--protocol", default="pipeline", choices=PROTOCOLS)
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="test: the course test CSV; unseen: the images, in both CSVs, of the people "
                             "in splits/unseen_people.txt (never in a default training run)")
    parser.add_argument("--csv", default=None, help="labelled CSV (default: the --split set)")
    parser.add_argument("--images", default=None, help="folder of the CSV's images")
    parser.add_argument("--convention", default=None, choices=sorted(TWO_HEAD_CONVENTIONS),
                        help="the head to score (default: the labels' convention, from the images' names: "
                             "300w for get_data.py's `<source>-...` imports such as fkp-wild, else course)")
    parser.add_argument("--no-flip", action="store_true", help="no flip averaging at test time")
    parser.add_argument("--no-face-check", action="store_true",
                        help="keep the detections that detect.py's face check drops (what the check costs)")
    parser.add_argument("--accurate", action="store_true",
                        help="detect.py's --accurate: more forward passes per face (a middle refine crop, "
                             "the last crop at five small shifts)")
    parser.add_argument("--plot", default=None, help="write the CED plot to this PNG")
    parser.add_argument("--worst", type=int, default=0, metavar="N",
                        help="also list the N faces with the largest error (misses first)")
    parser.add_argument("--rotate", type=float, default=0.0, metavar="DEG",
                        help="turn each image and its labels by DEG degrees counter-clockwise first")
    parser.add_argument("--degrade", default=None, choices=DEGRADATIONS, metavar="NAME",
                        help="degrade each image (after --rotate) first: "
                             + "; ".join(f"{k}: {v}" for k, v in DEGRADATION_NOTES.items()))
    args = parser.parse_args(argv)
    if not np.isfinite(args.rotate):
        parser.error(f"--rotate {args.rotate}: give a number of degrees")
    if args.worst < 0:
        parser.error(f"--worst {args.worst}: give a number of faces, 0 or more")
    if args.plot:
        reserve_plot(parser, args)
    with stop_between_steps():
        return report(args)


def report(args):
    """Evaluate as the command line asks, print the summary and write the plot: main's work."""
    try:
        m = evaluate(args.model, args.protocol, args.csv, args.images, flip_average=not args.no_flip,
                     backend=args.backend, rotate=args.rotate, split=args.split, degrade=args.degrade,
                     face_check=not args.no_face_check, accurate=args.accurate, convention=args.convention)
    except ConventionError as e:  # the option is at fault: exit status 2, as the parser's errors
        print(f"evaluate.py: {e}", file=sys.stderr)
        sys.exit(2)
    except DataError as e:
        sys.exit(f"evaluate.py: {e}")
    except KeyboardInterrupt:
        print("evaluate.py: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    label = args.protocol + ("" if args.csv or args.split == "test" else f", {args.split} people")
    label += f", rotated {args.rotate:g} degrees" if args.rotate else ""
    label += ", --accurate" if args.accurate else ""
    label += f", {args.degrade}" if args.degrade else ""  # the plot's legend: the note is too long
    print(format_summary(label + (f" ({DEGRADATION_NOTES[args.degrade]})" if args.degrade else ""), m))
    print(convention_line(m))
    n = max(1, m["found"])
    print(f"  time per face: detection {1000 * m['seconds']['detection'] / m['faces']:.2f} ms, "
          f"CNN {1000 * m['seconds']['cnn'] / n:.2f} ms")
    if args.worst:
        print(f"the {min(args.worst, m['faces'])} faces with the largest error:",
              *worst_faces(m, args.worst), sep="\n")
    if args.plot and m["found"]:
        try:
            plot_ced({f"ours ({label}, {m['convention']} head)": m["errors"]}, args.plot)
        except OSError as e:
            sys.exit(f"evaluate.py: --plot {args.plot}: cannot write it ({e.strerror or e}); "
                     "any earlier plot there is as it was")
        print(f"CED plot: {args.plot}")
    return m


if __name__ == "__main__":
    main()
