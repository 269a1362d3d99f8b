"""Bad input loses nothing and shows no traceback: one table row per case.

Each Case runs one command of this repository as a user types it (`python train.py ...` or
`python -m facial_keypoints ...` from the repository root, FKP_DATA pointing at a tiny dataset in the
case's own folder; launcher() says how the process is started) and expects its exit status, exactly
one line on stderr containing `message` (which names the file or option at fault; None: a run that
must print nothing on stderr), no traceback, and every file listed in `unchanged` byte for byte as it
was before. A run that was interrupted must leave no process of its own behind (workers, forkserver,
resource tracker).

The rows are grouped by script: train.py, detect.py and filters.py (and the installed command),
evaluate.py, export.py, cluster.py, then the rest. To add a row, append a Case to its group (or build
one with the group's helper: train_case, detect_case, evaluate_case, export_case, cluster_case):
- argv: the command without `python` ("-m", "facial_keypoints" for the installed command); "{tmp}"
  stands for the case's folder, which holds the tiny course-layout dataset at {tmp}/data (FKP_DATA)
  and whatever `setup(tmp)` writes first (steps(...) chains setups);
- unchanged: paths relative to that folder (or absolute), compared by sha256 before and after;
- interrupt_after: send `interrupt` (Ctrl-C, SIGINT, unless the row says SIGTERM) once stdout shows
  this text, or once interrupt_after(tmp) is true (handles(signum): once the command has installed
  its handler); check(tmp): more assertions; cleanup(tmp): runs whatever happens (unmounts what setup
  mounted);
- seconds: the run must end within them (TIMEOUT unless the row says less).
A setup may pytest.skip, saying why (a small disk needs root where mounting is allowed).
Progress bars are drawn only on a terminal, so they do not count as stderr lines here.
"""

import hashlib
import json
import multiprocessing
import os
import runpy
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
import torch
from conftest import write_course_dataset

import train
from models import Net, save_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the commands spend their first seconds importing (torch, OpenCV, ONNX...); see launcher().
PRELOAD = ["torch", "torchvision", "cv2", "numpy", "pandas", "PIL.Image", "matplotlib.figure", "tqdm",
           "onnx", "onnxruntime", __name__]
TIMEOUT = 60  # seconds per case


@dataclass
class Case:
    name: str
    argv: list
    status: int
    message: str                    # None: nothing on stderr
    unchanged: list = field(default_factory=list)
    setup: object = None            # setup(tmp: Path) prepares the case's folder
    interrupt_after: object = None  # text on stdout, or interrupt_after(tmp: Path) -> bool
    interrupt: int = signal.SIGINT  # what interrupt_after sends
    check: object = None            # check(tmp: Path) after the run
    cleanup: object = None          # cleanup(tmp: Path), after the run, whatever happened
    seconds: float = TIMEOUT        # the run must end within them

    def __str__(self):
        return self.name


def filled(argv, tmp):
    return [a.replace("{tmp}", str(tmp)) for a in argv]


def steps(*setups):
    """One setup made of several, run in order (None: skipped)."""
    def setup(tmp):
        for step in filter(None, setups):
            step(tmp)
    return setup


def write(relative, text):
    """A setup that writes `text` to {tmp}/relative: an earlier output that must survive."""
    def setup(tmp):
        (tmp / relative).write_text(text)
    return setup


# ---------------------------------------------------------------------------------------------
# Files the cases start from: a photo, models (.pt and ONNX), videos, odd paths, small disks.

def face_png(tmp, name="face.png"):
    """The astronaut's face: a real photo the tiny model can be run on (its keypoints do not matter)."""
    from skimage import data
    cv2.imwrite(str(tmp / name), cv2.cvtColor(data.astronaut()[0:300, 100:400], cv2.COLOR_RGB2BGR))


def pt_model(name="model.pt", **meta):
    """A setup: a tiny model as train.py saves one (untrained: only its bytes matter), `meta`
    changing its metadata."""
    def setup(tmp):
        fields = dict(arch="net", input_size=32, model_options={"widths": [4] * 5, "hidden": 8},
                      crop_margin=train.CROP_MARGIN, crop_shift=train.CROP_SHIFT, command="python train.py")
        save_model(Net(32, widths=[4] * 5, hidden=8), str(tmp / name), {**fields, **meta})
    return setup


def onnx_model(name="model.onnx", graph_size=32, outputs=136, second_input=False, **meta):
    """A setup: a tiny ONNX file laid out as export.py writes one, crops (batch, 1, S, S) -> keypoints
    (batch, outputs), all of them at the crop's centre (zero weights), S = graph_size;
    `second_input` adds a required input; `meta` changes the metadata (whose input_size may differ
    from the graph's S)."""
    def setup(tmp):
        import onnx
        from onnx import TensorProto, helper
        weights = helper.make_tensor("w", TensorProto.FLOAT, [graph_size * graph_size, outputs],
                                     [0.0] * (graph_size * graph_size * outputs))
        inputs = [helper.make_tensor_value_info("crops", TensorProto.FLOAT,
                                                ["batch", 1, graph_size, graph_size])]
        nodes = [helper.make_node("Flatten", ["crops"], ["flat"]),
                 helper.make_node("MatMul", ["flat", "w"], ["product"])]
        if second_input:
            inputs.append(helper.make_tensor_value_info("offset", TensorProto.FLOAT, [1, outputs]))
            nodes.append(helper.make_node("Add", ["product", "offset"], ["keypoints"]))
        else:
            nodes.append(helper.make_node("Identity", ["product"], ["keypoints"]))
        graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info(
            "keypoints", TensorProto.FLOAT, ["batch", outputs])], [weights])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        model.ir_version = 8
        fields = {"input_size": 32, "crop_margin": 1.2, "crop_shift": 0.157, "arch": "net", **meta}
        helper.set_model_props(model, {key: json.dumps(value) for key, value in fields.items()})
        onnx.save(model, str(tmp / name))
    return setup


def nan_model(tmp):
    """{tmp}/nan.pt: a model with a non-finite weight."""
    model = Net(32, widths=[4] * 5, hidden=8, head="regression")
    with torch.no_grad():
        model.fc2.weight[0, 0] = float("nan")
    save_model(model, str(tmp / "nan.pt"), dict(arch="net", input_size=32, crop_margin=1.3, crop_shift=0.1,
                                                model_options={"widths": [4] * 5, "hidden": 8}))


def model_without_crop_margin(tmp):
    """{tmp}/old.pt: a model saved before its metadata said crop_margin."""
    save_model(Net(32), str(tmp / "old.pt"), dict(arch="net", input_size=32, crop_shift=0.1))


def fifo_model(tmp):
    """{tmp}/fifo.pt: a named pipe."""
    os.mkfifo(tmp / "fifo.pt")


def symlink_loop_model(tmp):
    """{tmp}/loop.pt: a symbolic link to a link to it."""
    os.symlink(tmp / "loop_b.pt", tmp / "loop.pt")
    os.symlink(tmp / "loop.pt", tmp / "loop_b.pt")


def folder_model(tmp):
    """{tmp}/folder.pt: a folder."""
    (tmp / "folder.pt").mkdir()


def png_claiming(tmp, width=60000, height=60000):
    """{tmp}/huge.png: a PNG whose header claims width x height pixels (the file itself is tiny)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    (tmp / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                   + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def jpeg_with_corrupt_exif(tmp):
    """face.jpg: a good JPEG whose EXIF block claims more entries than it holds."""
    face_png(tmp)
    jpeg = cv2.imencode(".jpg", cv2.imread(str(tmp / "face.png")))[1].tobytes()
    exif = b"Exif\0\0II*\0" + struct.pack("<IH", 8, 5) + b"\x01\x02" * 3
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    (tmp / "face.jpg").write_bytes(jpeg[:2] + app1 + jpeg[2:])


def copies_of_the_face(tmp, count=60):
    """{tmp}/photos: `count` copies of face_png."""
    (tmp / "photos").mkdir()
    face_png(tmp, "photos/face.png")
    for i in range(1, count):
        (tmp / "photos" / f"face{i}.png").write_bytes((tmp / "photos" / "face.png").read_bytes())


def write_video(tmp, name="clip.avi", frames=100, size=(320, 240)):
    """An .avi of the astronaut's face drifting sideways, `frames` long (or blank, 1 x 1 and so on:
    frames of any `size` hold a crop of the photo)."""
    from skimage import data
    width, height = size
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    writer = cv2.VideoWriter(str(tmp / name), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        writer.write(np.ascontiguousarray(photo[0:height, 100 + i % 50:100 + i % 50 + width]))
    writer.release()


def cut_video(tmp):
    """{tmp}/cut.avi: an .avi of 40 frames cut to its first half: its header still says 40."""
    writer = cv2.VideoWriter(str(tmp / "whole.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), 6 * i, np.uint8))
    writer.release()
    data = (tmp / "whole.avi").read_bytes()
    (tmp / "cut.avi").write_bytes(data[: len(data) // 2])


def mount_tmpfs(folder, options):
    """A tmpfs at `folder` (size, ro ...); the test is skipped where mounting is not allowed."""
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root in a container that allows it): "
                    f"{done.stderr.strip()}")


def unmount(folder):
    """A cleanup: unmount {tmp}/folder if a setup mounted it."""
    def cleanup(tmp):
        if os.path.ismount(tmp / folder):
            subprocess.run(["umount", str(tmp / folder)], check=True)
    return cleanup


def full_disk(free_pages):
    """A setup: {tmp}/full, a tmpfs of `free_pages` + 1 pages, one of them taken."""
    def setup(tmp):
        mount_tmpfs(tmp / "full", f"size={4 * (free_pages + 1)}k")
        (tmp / "full" / "filler").write_bytes(b"x" * 4096)
    return setup


def small_disk(tmp):
    """{tmp}/disk: a tmpfs of a few pages, for files a later fill_disk or read_only leaves there."""
    mount_tmpfs(tmp / "disk", "size=1m")


def fill_disk(tmp):
    """Fill {tmp}/disk up: any write there fails (an empty file can still be created)."""
    with open(tmp / "disk" / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass


def read_only(tmp):
    """Remount {tmp}/disk read-only."""
    subprocess.run(["mount", "-o", "remount,ro", str(tmp / "disk")], check=True)


# ---------------------------------------------------------------------------------------------
# Checks after a run, and when to interrupt one.

def absent(*names):
    def check(tmp):
        for name in names:
            assert not (tmp / name).exists(), f"{name} was written"
    return check


def files_under(path):
    """The files in a folder and its subfolders (a file: itself; missing: none)."""
    if os.path.isfile(path):
        return [str(path)]
    return [os.path.join(root, f) for root, _, files in os.walk(path) for f in files]


def whole_json_lines(path):
    text = path.read_text()
    assert text == "" or text.endswith("\n"), f"{path}: its last record is cut: {text[-80:]!r}"
    for line in text.splitlines():
        assert isinstance(json.loads(line), dict), line


def nothing_half_written(*folders):
    """A check: every file in the case's `folders` whole (videos readable, JSON Lines whole), and no
    temporary file (a name starting with ".") left behind."""
    def check(tmp):
        for path in (p for folder in folders for p in files_under(tmp / folder)):
            assert not os.path.basename(path).startswith("."), f"{path}: a temporary file left behind"
            if path.endswith(".mp4"):
                capture = cv2.VideoCapture(path)
                assert capture.isOpened() and capture.read()[0], f"{path}: not a readable video"
                capture.release()
            elif path.endswith(".jsonl"):
                whole_json_lines(tmp / path)  # an absolute path: pathlib keeps it
            elif path.endswith(".png"):
                assert cv2.imread(path) is not None, f"{path}: not a readable image"
    return check


def no_temporary_file_in(relative):
    """A check: no temporary file (".tmp" in its name) left in {tmp}/relative."""
    def check(tmp):
        left = [p.name for p in (tmp / relative).iterdir() if ".tmp" in p.name]
        assert not left, f"temporary files left behind: {left}"
    return check


def output_appears(name):
    """interrupt_after: once `name` is in {tmp}/out, a run is past its first output."""
    return lambda tmp: (tmp / "out" / name).exists()


def handles(signum):
    """interrupt_after: once the process handles `signum` (its SigCgt mask in /proc; run() writes
    its pid to {tmp}/pid), so the signal is sent after main() has installed its handler, not before."""
    def ready(tmp):
        pid = int((tmp / "pid").read_text()) if (tmp / "pid").exists() else None
        try:
            with open(f"/proc/{pid}/status") as f:
                caught = next(line for line in f if line.startswith("SigCgt:")).split()[1]
        except (OSError, StopIteration, TypeError):
            return False
        return bool(int(caught, 16) >> (signum - 1) & 1)
    return ready


def has_workers(tmp):
    """interrupt_after: once the command (its pid in {tmp}/pid) has started a worker process, one
    that is not multiprocessing's resource tracker, so that the no-orphan check has one to find."""
    pid = int((tmp / "pid").read_text()) if (tmp / "pid").exists() else None
    for child in descendants(pid) if pid else ():
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                if b"resource_tracker" not in f.read():
                    return True
        except OSError:
            continue  # gone meanwhile
    return False


def video_frame_written(tmp):
    """interrupt_after: once the video's temporary file (out/.clip.*.mp4) exists and the JSON Lines'
    temporary file (.k.jsonl.*.tmp) holds a record of one of its frames, written after the frame."""
    if not any((tmp / "out").glob(".clip.*.mp4")):
        return False
    for path in tmp.glob(".k.jsonl.*.tmp"):
        try:
            if '"frame": ' in path.read_text():
                return True
        except OSError:
            continue  # renamed meanwhile
    return False


def exists(relative):
    def check(tmp):
        assert (tmp / relative).exists(), f"{relative} was not kept"
    return check


def old_plot(relative):
    """A setup: an earlier run's plot at {tmp}/relative, as matplotlib writes one (it may be replaced)."""
    def setup(tmp):
        from matplotlib.figure import Figure
        Figure(figsize=(1, 1)).savefig(tmp / relative)
    return setup


repository_files = {}  # path -> its bytes, kept by guard()


def guard(path):
    """A (setup, cleanup) pair for a row that names a file of the repository: should the run replace
    it (the row fails), the cleanup puts it back, so the rest of the suite is not broken with it."""
    def setup(tmp):
        with open(path, "rb") as f:
            repository_files[path] = f.read()

    def cleanup(tmp):
        saved = repository_files.pop(path, None)
        if saved is not None and (not os.path.isfile(path) or open(path, "rb").read() != saved):
            with open(path, "wb") as f:
                f.write(saved)
    return setup, cleanup


# ---------------------------------------------------------------------------------------------
# train.py: options, output paths, the data, divergence, --init, checkpoints, saves, Ctrl-C.

TRAIN = ["train.py", "--input-size", "32", "--widths", "4,4,4,4,4", "--batch-size", "2", "--epochs", "1"]
TRAIN_CSV = "training_frames_keypoints.csv"
TEST_CSV = "test_frames_keypoints.csv"


def finished_run(out="model.pt"):
    """A setup: TRAIN run to the end in this process: {tmp}/out, its checkpoint out.ckpt (and curves)."""
    def setup(tmp):
        train.main(filled(TRAIN[1:], tmp) + ["--data", str(tmp / "data"), "--out", str(tmp / out)])
    return setup


def edit_checkpoint(tmp, **changes):
    path = tmp / "model.pt.ckpt"
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, **changes}, path)


def truncate_checkpoint(tmp):
    path = tmp / "model.pt.ckpt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def pickled_checkpoint(tmp):
    """{tmp}/disk/model.pt.ckpt: a plain pickle, not a torch.save archive."""
    import pickle
    (tmp / "disk").mkdir()
    (tmp / "disk" / "model.pt.ckpt").write_bytes(pickle.dumps({"epoch": 1}, protocol=4))


def edit_csv(csv, edit):
    """A setup that rewrites {tmp}/data/csv's lines (header first) with edit(lines)."""
    def setup(tmp):
        path = tmp / "data" / csv
        path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    return setup


def edit_cell(row, column, value, csv=TRAIN_CSV):
    """A setup that sets one cell of a CSV (row 1 = first face, column 0 = image name)."""
    def edit(lines):
        cells = lines[row].split(",")
        cells[column] = value
        return [*lines[:row], ",".join(cells), *lines[row + 1:]]
    return edit_csv(csv, edit)


def short_row_2(lines):
    """Row 2 cut to its first 100 cells."""
    return [*lines[:2], ",".join(lines[2].split(",")[:100]), *lines[3:]]


def checkpoint_finite(tmp):
    """A diverged run may have checkpointed earlier, finite epochs, never a non-finite one."""
    path = tmp / "model.pt.ckpt"
    if path.exists():
        weights = torch.load(path, weights_only=True)["model"].values()
        assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())


def checkpoint_intact(tmp):
    ckpt = torch.load(tmp / "model.pt.ckpt", weights_only=True)
    assert ckpt["epoch"] >= 1 and not ckpt["finished"]
    assert not list(tmp.glob("*.tmp*")), "a temporary file was left behind"


def train_case(name, extra, status, message, setup=None, unchanged=("model.pt",), **more):
    """A train.py row: TRAIN --out {tmp}/model.pt plus `extra`, over a good model already there."""
    return Case(name, [*TRAIN, "--out", "{tmp}/model.pt", *extra], status, message, list(unchanged),
                steps(pt_model(), setup), **more)


def resume_case(name, extra, message, damage=None):
    """--resume after a finished run, its checkpoint first damaged by `damage(tmp)`."""
    return train_case(name, ["--resume", *extra], 1, message, steps(finished_run(), damage),
                      unchanged=["model.pt", "model.pt.ckpt"])


TRAIN_ON_DISK = [*TRAIN, "--data", "{tmp}/data", "--out", "{tmp}/disk/model.pt"]
RUN_ON_DISK = ["disk/model.pt", "disk/model.pt.ckpt"]
CASES = [
    # Options: refused while parsing (exit 2), before anything is read or written.
    train_case("epochs-0", ["--epochs", "0"], 2, "--epochs"),
    train_case("epochs-negative", ["--epochs", "-1"], 2, "--epochs"),
    train_case("batch-size-0", ["--batch-size", "0"], 2, "--batch-size"),
    train_case("lr-nan", ["--lr", "nan"], 2, "--lr"),
    train_case("lr-negative", ["--lr", "-0.1"], 2, "--lr"),
    train_case("weight-decay-negative", ["--weight-decay", "-1"], 2, "--weight-decay"),
    train_case("val-fraction-1.5", ["--val-fraction", "1.5"], 2, "--val-fraction"),
    train_case("loss-foo", ["--loss", "foo"], 2, "--loss"),
    train_case("arch-foo", ["--arch", "foo"], 2, "--arch"),
    train_case("widths-three", ["--widths", "1,2,3"], 2, "--widths"),
    train_case("widths-zero", ["--widths", "0,4,4,4,4"], 2, "--widths"),
    train_case("rotation-negative", ["--rotation", "-5"], 2, "--rotation"),
    train_case("device-tpu", ["--device", "tpu"], 2, "--device"),
    train_case("input-size-too-small", ["--input-size", "8"], 1, "--input-size 8"),
    # Output paths: checked before the data is loaded; never a file that is not a model, nor --init.
    train_case("out-is-a-folder", ["--out", "{tmp}/folder"], 1, "is a folder",
               setup=lambda tmp: (tmp / "folder").mkdir()),
    train_case("out-under-a-file", ["--out", "{tmp}/model.pt/x.pt"], 1, "model.pt is a file, not a folder"),
    Case("train-out-is-a-photo", [*TRAIN, "--data", "{tmp}/data", "--out", "{tmp}/face.png"], 1,
         "is not a model file", ["face.png"], face_png),
    Case("train-curves-are-a-photo", [*TRAIN, "--data", "{tmp}/data", "--out", "{tmp}/x.pt"], 1,
         "x_curves.png: exists and is not a plot", ["x_curves.png"],
         lambda tmp: face_png(tmp, "x_curves.png"), check=absent("x.pt", "x.pt.ckpt")),
    Case("train-out-is-the-init-model",
         [*TRAIN, "--data", "{tmp}/data", "--init", "{tmp}/model.pt", "--out", "{tmp}/model.pt"], 1,
         "choose another --out", ["model.pt"], pt_model()),
    # The data: one bad cell names the CSV and the row.
    train_case("csv-blank-cell", [], 1, f"{TRAIN_CSV}: row 1", setup=edit_cell(1, 5, "")),
    train_case("csv-short-row", [], 1, f"{TRAIN_CSV}: row 2", setup=edit_csv(TRAIN_CSV, short_row_2)),
    train_case("csv-no-image-name", [], 1, "has no image name", setup=edit_cell(1, 0, "")),
    train_case("csv-coordinate-1e30", [], 1, f"{TRAIN_CSV}: row 1", setup=edit_cell(1, 7, "1e30")),
    train_case("csv-image-missing", [], 1, "missing", setup=edit_cell(2, 0, "Person_absent_00.jpg")),
    # Training that diverges stops before saving anything over a good file.
    train_case("lr-1e6-diverges", ["--lr", "1e6", "--epochs", "3"], 1, "lower --lr", check=checkpoint_finite),
    train_case("batch-larger-than-the-data", ["--batch-size", "8"], 1, "--batch-size 8"),
    # --init: models that cannot be used.
    train_case("init-absent", ["--init", "{tmp}/absent.pt"], 1, "absent.pt: no such model file"),
    train_case("init-missing-crop-margin", ["--init", "{tmp}/old.pt"], 1, "crop_margin",
               setup=model_without_crop_margin),
    train_case("init-nan-weights", ["--init", "{tmp}/nan.pt"], 1, "non-finite weights", setup=nan_model),
    # Checkpoints: resume only what is there and fits; never start afresh over an unfinished run.
    train_case("resume-without-checkpoint", ["--resume"], 1, "no checkpoint at"),
    resume_case("resume-truncated", [], "model.pt.ckpt: not a readable checkpoint", truncate_checkpoint),
    resume_case("resume-garbage", [], "model.pt.ckpt: not a readable checkpoint",
                lambda tmp: (tmp / "model.pt.ckpt").write_bytes(b"not a checkpoint")),
    resume_case("resume-other-widths", ["--widths", "8,8,8,8,8"], "--widths 8,8,8,8,8"),
    resume_case("resume-weights-do-not-fit", [], "model.pt.ckpt: its weights do not fit",
                lambda tmp: edit_checkpoint(tmp, model=Net(32, widths=[8] * 5, hidden=8).state_dict())),
    Case("train-resume-pickled-checkpoint", [*TRAIN_ON_DISK, "--resume"], 1,
         "model.pt.ckpt: not a readable checkpoint", ["disk/model.pt.ckpt"], pickled_checkpoint),
    train_case("new-run-over-unfinished-checkpoint", [], 1, "--resume",
               setup=steps(finished_run(), lambda tmp: edit_checkpoint(tmp, finished=False)),
               unchanged=["model.pt", "model.pt.ckpt"]),
    train_case("new-run-over-a-foreign-file", [], 1, "model.pt.ckpt exists and is not a train.py checkpoint",
               setup=write("model.pt.ckpt", "mine"), unchanged=["model.pt.ckpt"]),
    # A save that fails (full disk) is one line, the earlier files whole.
    Case("train-checkpoint-disk-full", TRAIN_ON_DISK, 1, "disk/model.pt.ckpt: cannot write it", RUN_ON_DISK,
         steps(small_disk, finished_run("disk/model.pt"), fill_disk), check=no_temporary_file_in("disk"),
         cleanup=unmount("disk")),
    Case("train-final-save-disk-full", [*TRAIN_ON_DISK, "--resume"], 1, "disk/model.pt: cannot write it",
         RUN_ON_DISK, steps(small_disk, finished_run("disk/model.pt"), fill_disk),
         check=no_temporary_file_in("disk"), cleanup=unmount("disk")),
    # Ctrl-C: the checkpoint of the last whole epoch stays, --out is untouched.
    train_case("ctrl-c", ["--epochs", "5000"], 130, "interrupted after epoch", interrupt_after="epoch   1/",
               check=checkpoint_intact),
    train_case("sigterm", ["--epochs", "5000"], 130, "interrupted after epoch", interrupt_after="epoch   1/",
               interrupt=signal.SIGTERM, check=checkpoint_intact),
]


# ---------------------------------------------------------------------------------------------
# detect.py and filters.py (and the installed command): options, inputs, model files, outputs
# reserved up front and written whole (JSON Lines, videos, images), SIGTERM handled as Ctrl-C, and no
# stray lines from the libraries.

ONNX = ["--backend", "onnx"]
SHIPPED = os.path.join(ROOT, "facial_keypoints", "saved_models")
SHIPPED_PT = os.path.join(SHIPPED, "keypoints_model.pt")
SHIPPED_PT_AS_TYPED = os.path.relpath(SHIPPED_PT, ROOT)  # facial_keypoints/saved_models/keypoints_model.pt
GUARD_SHIPPED_PT = guard(SHIPPED_PT)
LONG_OUT = "{tmp}/" + "/".join(["d" * 240] * 16)  # a folder whose files' paths near PATH_MAX
LONG_NAME = "n" * 200 + ".png"
OLD_JSON = '{"image": "a.jpg", "faces": []}\n'  # an earlier run's JSON Lines
held_locks = {}  # tmp -> a descriptor holding a lock, as another run would


def detect_case(name, extra, status, message, setup=None, unchanged=(), script="detect.py", inputs=(),
                model="model.pt", **more):
    """A detect.py row (or filters.py, or the installed command: script "-m") on {tmp}/face.png (and
    `inputs`) with {tmp}/`model`, output in {tmp}/out; a good tiny model is written at
    {tmp}/model.pt first, then `setup` prepares the rest."""
    command = ["-m", "facial_keypoints"] if script == "-m" else [script]
    argv = [*command, "{tmp}/face.png", *inputs, "--out", "{tmp}/out", "--model", f"{{tmp}}/{model}", *extra]
    return Case(name, argv, status, message, ["face.png", *unchanged], steps(face_png, pt_model(), setup),
                **more)


def hold_lock(tmp):
    """k.jsonl, an earlier run's result, locked as a run writing it holds it."""
    import fcntl
    (tmp / "k.jsonl").write_text(OLD_JSON)
    held_locks[tmp] = os.open(tmp / "k.jsonl", os.O_RDONLY)
    fcntl.flock(held_locks[tmp], fcntl.LOCK_EX)


def release_lock(tmp):
    os.close(held_locks.pop(tmp))


def annotated_copy_written(tmp):
    assert list((tmp / "out").glob("cut*.mp4")), "the frames read were not kept"


def remove_stray(path):
    """cleanup: the run must not have written `path` (outside the case's folder); if it did, the
    check has failed, and the file goes."""
    def cleanup(tmp):
        if os.path.exists(path):
            os.remove(path)
    return cleanup


CASES += [
    # Options and inputs.
    detect_case("detect-camera-negative", ["--camera", "-1"], 2, "--camera -1"),
    detect_case("detect-scale-factor-nan", ["--face-detector", "haar", "--scale-factor", "nan"], 2,
                "--scale-factor nan"),
    detect_case("detect-haar-option-for-blazeface", ["--scale-factor", "1.1"], 2,
                "--scale-factor: for --face-detector haar"),
    detect_case("detect-upright-only-for-blazeface", ["--upright-only"], 2,
                "--upright-only is for --face-detector haar"),
    detect_case("detect-detect-every-0", ["--detect-every", "0"], 2, "--detect-every"),
    detect_case("detect-image-claims-60000-squared", [], 1, "over the limit of 100 megapixels",
                setup=png_claiming, inputs=["{tmp}/huge.png"]),
    detect_case("detect-truncated-video", [], 1, "cut.avi: the video ends after", setup=cut_video,
                inputs=["{tmp}/cut.avi"], check=annotated_copy_written),
    detect_case("detect-video-of-1x1-frames", [], 1, "tiny.avi: its frames are 1 x 1 pixels",
                inputs=["{tmp}/tiny.avi"], setup=lambda tmp: write_video(tmp, "tiny.avi", 3, (1, 1))),
    # Models that cannot be used: one line naming the file.
    detect_case("detect-model-without-crop-margin", ["--model", "{tmp}/old.pt"], 1, "crop_margin",
                setup=model_without_crop_margin),
    detect_case("filters-model-without-crop-margin", ["--model", "{tmp}/old.pt"], 1, "crop_margin",
                setup=model_without_crop_margin, script="filters.py"),
    detect_case("detect-model-nan-weights", ["--model", "{tmp}/nan.pt"], 1, "non-finite", setup=nan_model),
    detect_case("detect-onnx-size-differs-from-its-graph", [*ONNX, "--model", "{tmp}/model.onnx"], 1,
                "export it again", setup=onnx_model(input_size=40)),
    detect_case("detect-onnx-not-136-outputs", [*ONNX, "--model", "{tmp}/model.onnx"], 1, "export it again",
                setup=onnx_model(outputs=10)),
    # An ONNX graph with a second required input: it cannot run on crops alone.
    detect_case("detect-onnx-second-input", ONNX, 1, "model.onnx: the graph takes 2 inputs",
                onnx_model(second_input=True), model="model.onnx"),
    detect_case("filters-onnx-second-input", ONNX, 1, "model.onnx: the graph takes 2 inputs",
                onnx_model(second_input=True), script="filters.py", model="model.onnx"),
    detect_case("detect-workers-2-onnx-second-input", [*ONNX, "--workers", "2"], 1,
                "model.onnx: the graph takes 2 inputs",
                steps(onnx_model(second_input=True), lambda tmp: face_png(tmp, "face2.png")),
                inputs=["{tmp}/face2.png"], model="model.onnx"),
    detect_case("command-onnx-second-input", ONNX, 1, "model.onnx: the graph takes 2 inputs",
                onnx_model(second_input=True), script="-m", model="model.onnx"),
    # Metadata out of range (face_crop.crop_meta_problem), in ONNX and .pt files alike.
    detect_case("detect-onnx-crop-margin-negative", ONNX, 1, "model.onnx: its metadata says crop_margin -5",
                onnx_model(crop_margin=-5), model="model.onnx"),
    detect_case("detect-onnx-crop-shift-nan", ONNX, 1, "model.onnx: its metadata says crop_shift nan",
                onnx_model(crop_shift=float("nan")), model="model.onnx"),
    detect_case("detect-onnx-input-size-text", ONNX, 1, "model.onnx: its metadata says input_size '32'",
                onnx_model(input_size="32"), model="model.onnx"),
    detect_case("detect-pt-crop-margin-negative", [], 1, "model.pt: its metadata says crop_margin -5",
                pt_model(crop_margin=-5)),
    detect_case("detect-pt-crop-margin-zero", ["--backend", "torch"], 1,
                "model.pt: its metadata says crop_margin 0", pt_model(crop_margin=0)),
    # A head the model lacks (a course Net asked for 300-W's): the option is at fault, as a parser error.
    detect_case("detect-convention-the-model-lacks", ["--convention", "300w"], 2,
                "model.pt: --convention 300w: the model has no 300w head"),
    detect_case("filters-convention-the-model-lacks", ["--convention", "300w"], 2,
                "model.pt: --convention 300w: the model has no 300w head", script="filters.py"),
    # A model that puts every keypoint on one point implies a face box of no size: no crash.
    detect_case("detect-onnx-keypoints-on-one-point", ONNX, 0, None, onnx_model(), model="model.onnx"),
    # Paths that are no model file: said as they are, not as "no such file"; a pipe is not read.
    detect_case("detect-model-fifo", [], 1, "fifo.pt: not a regular file", fifo_model, model="fifo.pt"),
    detect_case("detect-model-symlink-loop", [], 1, "loop.pt: a symbolic link loop", symlink_loop_model,
                model="loop.pt"),
    detect_case("detect-model-folder", [], 1, "folder.pt: a folder", folder_model, model="folder.pt"),
    detect_case("detect-onnx-model-folder", ONNX, 1, "folder.pt: a folder", folder_model, model="folder.pt"),
    # Outputs reserved before any input is read: not an input, not the models shipped or in use, not
    # an output image, not a file another run is writing.
    detect_case("detect-json-is-the-input", ["--json", "{tmp}/face.png"], 1,
                "face.png: is one of the inputs"),
    detect_case("detect-json-is-the-model-in-use", ["--json", "{tmp}/model.pt"], 1,
                "model.pt, which this run must leave as it is", unchanged=["model.pt"]),
    # the default model: its int8 ONNX copy is loaded, and the .pt beside it is kept all the same
    Case("detect-json-is-the-shipped-pt",
         ["detect.py", "{tmp}/face.png", "--out", "{tmp}/out", "--json", SHIPPED_PT_AS_TYPED], 1,
         "saved_models, which this run must leave as it is", ["face.png", SHIPPED_PT],
         steps(face_png, GUARD_SHIPPED_PT[0]), cleanup=GUARD_SHIPPED_PT[1]),
    detect_case("detect-json-in-the-shipped-models", ["--json", f"{SHIPPED}/k.jsonl"], 1,
                "saved_models/k.jsonl: is inside", check=absent(f"{SHIPPED}/k.jsonl"),
                cleanup=remove_stray(f"{SHIPPED}/k.jsonl")),
    detect_case("detect-json-names-an-output-image", ["--json", "{tmp}/out/face.png"], 1,
                "out/face.png: a name for an image or a video", check=absent("out/face.png")),
    detect_case("detect-json-held-by-another-run", ["--json", "{tmp}/k.jsonl"], 1,
                "k.jsonl: another run is writing this file", setup=hold_lock, unchanged=["k.jsonl"],
                cleanup=release_lock),
    # Output folders and files that cannot be written: one line, and the rest of the run goes on
    # where only one input is at fault.
    detect_case("detect-json-disk-full", ["--json", "/dev/full"], 1, "/dev/full: cannot write"),
    detect_case("detect-json-on-a-full-disk", ["--json", "{tmp}/full/k.jsonl"], 1,
                "k.jsonl: cannot write (No space left on device)", inputs=["{tmp}/blank.avi"],
                setup=steps(full_disk(free_pages=1),
                            lambda tmp: write_video(tmp, "blank.avi", frames=120, size=(64, 48))),
                check=nothing_half_written("full", "out"), cleanup=unmount("full")),
    detect_case("detect-out-is-a-file", ["--out", "{tmp}/face.png"], 1, "face.png: is a file"),
    detect_case("detect-out-under-a-file", ["--out", "{tmp}/face.png/out"], 1,
                "face.png is a file, not a folder"),
    detect_case("detect-out-read-only", ["--out", "{tmp}/ro/out"], 1, "cannot create or write in",
                setup=lambda tmp: mount_tmpfs(tmp / "ro", "ro,size=4k"), cleanup=unmount("ro")),
    detect_case("detect-image-disk-full", ["--out", "{tmp}/full"], 1,
                "face.png: cannot write the image (No space left on device)", setup=full_disk(free_pages=0),
                check=absent("full/face.png"), cleanup=unmount("full")),
    detect_case("detect-image-disk-full-keeps-the-earlier-image", ["--out", "{tmp}/disk/out"], 1,
                "disk/out/face.png: cannot write the image (No space left on device)",
                steps(small_disk, lambda tmp: (tmp / "disk" / "out").mkdir(),
                      write("disk/out/face.png", "an earlier run's image"), fill_disk),
                ["disk/out/face.png"], check=no_temporary_file_in("disk/out"), cleanup=unmount("disk")),
    detect_case("detect-output-name-too-long", ["--out", LONG_OUT], 1, "file name too long",
                inputs=[f"{{tmp}}/{LONG_NAME}", "{tmp}/face2.png"],
                setup=lambda tmp: (face_png(tmp, LONG_NAME), face_png(tmp, "face2.png")),
                check=lambda tmp: os.path.exists(filled([LONG_OUT], tmp)[0] + "/face2.png")),
    # SIGTERM as Ctrl-C: videos and JSON Lines whole, the worker pool shut down.
    detect_case("detect-sigterm-in-a-video", ["--json", "{tmp}/k.jsonl", "--detect-every", "1"], 130,
                "interrupted", inputs=["{tmp}/clip.avi"], setup=write_video,
                interrupt_after=video_frame_written, interrupt=signal.SIGTERM,
                check=steps(exists("out/clip.mp4"), nothing_half_written("out", "k.jsonl"))),
    Case("filters-sigterm-in-a-video",  # the video alone: the tiny model finds no face to filter
         ["filters.py", "{tmp}/clip.avi", "--out", "{tmp}/out", "--model", "{tmp}/model.pt",
          "--detect-every", "1"],
         130, "interrupted", setup=steps(pt_model(), write_video),
         interrupt_after=lambda tmp: bool(files_under(tmp / "out")), interrupt=signal.SIGTERM,
         check=nothing_half_written("out")),
    detect_case("detect-sigterm-with-two-workers",
                ["--workers", "2", *ONNX, "--model", "{tmp}/model.onnx", "--json", "{tmp}/k.jsonl"], 130,
                "interrupted", inputs=["{tmp}/photos"], setup=steps(copies_of_the_face, onnx_model()),
                interrupt_after=lambda tmp: bool(files_under(tmp / "out" / "photos")),
                interrupt=signal.SIGTERM, check=nothing_half_written("out", "k.jsonl")),
    # Nothing on stderr that says nothing to the user.
    detect_case("detect-jpeg-with-corrupt-exif", [], 0, None, inputs=["{tmp}/face.jpg"],
                setup=jpeg_with_corrupt_exif),
]


# ---------------------------------------------------------------------------------------------
# evaluate.py: its model, its CSV's rows, its --plot and --rotate, SIGTERM.

EVALUATE = ["evaluate.py", "--model", "{tmp}/model.pt", "--csv", f"{{tmp}}/data/{TEST_CSV}",
            "--images", "{tmp}/data/test"]


def evaluate_case(name, extra, status, message, setup=None, unchanged=(), **more):
    """An evaluate.py row on the tiny dataset's test split with a good tiny model at {tmp}/model.pt."""
    return Case(name, [*EVALUATE, *extra], status, message, list(unchanged), steps(pt_model(), setup),
                **more)


CASES += [
    evaluate_case("evaluate-model-without-crop-margin", ["--model", "{tmp}/old.pt"], 1, "crop_margin",
                  setup=model_without_crop_margin),
    evaluate_case("evaluate-model-folder", ["--model", "{tmp}/folder.pt"], 1, "folder.pt: a folder",
                  setup=folder_model),
    evaluate_case("evaluate-image-missing", [], 1, "missing from",
                  setup=edit_cell(1, 0, "Person_absent_00.jpg", csv=TEST_CSV)),
    evaluate_case("evaluate-duplicate-row", [], 1, f"{TEST_CSV}: row 3 repeats row 2",
                  setup=edit_csv(TEST_CSV, lambda lines: [*lines, lines[-1]])),
    evaluate_case("evaluate-image-outside-images", [], 1, "row 1 names ../training/Person_training_00.jpg",
                  setup=edit_cell(1, 0, "../training/Person_training_00.jpg", csv=TEST_CSV)),
    evaluate_case("evaluate-rotate-nan", ["--rotate", "nan"], 2, "--rotate"),
    evaluate_case("evaluate-convention-the-model-lacks", ["--convention", "300w"], 2,
                  "model.pt: --convention 300w: the model has no 300w head"),
    evaluate_case("evaluate-plot-under-a-file", ["--plot", "{tmp}/model.pt/ced.png"], 2, "--plot"),
    evaluate_case("evaluate-plot-format-unknown", ["--protocol", "labelled-box", "--plot", "{tmp}/ced.txt"],
                  2, "--plot"),
    evaluate_case("evaluate-plot-in-the-images", ["--plot", "{tmp}/data/test/ced.png"], 2,
                  "choose another --plot", check=absent("data/test/ced.png")),
    evaluate_case("evaluate-plot-disk-full", ["--protocol", "labelled-box", "--plot", "{tmp}/disk/ced.png"],
                  1, "disk/ced.png: cannot write it (No space left on device)",
                  steps(small_disk, old_plot("disk/ced.png"), fill_disk), ["disk/ced.png"],
                  check=no_temporary_file_in("disk"), cleanup=unmount("disk")),
    evaluate_case("evaluate-sigterm", ["--plot", "{tmp}/ced.png"], 130, "interrupted",
                  old_plot("ced.png"), ["ced.png"], interrupt_after=handles(signal.SIGTERM),
                  interrupt=signal.SIGTERM),
    evaluate_case("evaluate-plot-is-a-photo", ["--plot", "{tmp}/photo.png"], 2,
                  "photo.png: exists and is not a plot", lambda tmp: face_png(tmp, "photo.png"),
                  ["photo.png"]),
]


# ---------------------------------------------------------------------------------------------
# export.py: its outputs are reserved first and written whole; its input is checked.

def export_case(name, extra, status, message, setup=None, unchanged=(), model="model.pt", **more):
    """An export.py row: a good tiny model at {tmp}/model.pt exported from {tmp}/`model` to
    {tmp}/disk/m.onnx."""
    argv = ["export.py", "--model", f"{{tmp}}/{model}", "--out", "{tmp}/disk/m.onnx", "--crops", "2",
            "--no-int8", *extra]
    return Case(name, argv, status, message, list(unchanged), steps(pt_model(), setup), **more)


OLD_EXPORT = onnx_model("disk/m.onnx")  # the previous export
CASES += [
    export_case("export-model-fifo", [], 1, "fifo.pt: not a regular file", fifo_model, model="fifo.pt",
                seconds=20),
    export_case("export-model-crop-margin-negative", [], 1, "model.pt: its metadata says crop_margin -5",
                pt_model(crop_margin=-5)),
    export_case("export-out-read-only", [], 2, "Read-only file system",
                steps(small_disk, OLD_EXPORT, read_only), ["disk/m.onnx"], cleanup=unmount("disk")),
    export_case("export-out-disk-full", [], 1, "disk/m.onnx: cannot write it (No space left on device)",
                steps(small_disk, OLD_EXPORT, fill_disk), ["disk/m.onnx"], check=no_temporary_file_in("disk"),
                cleanup=unmount("disk")),
    export_case("export-out-is-another-model", ["--out", "{tmp}/other.pt"], 2, "is not an ONNX model",
                pt_model("other.pt"), ["other.pt"]),
]


# ---------------------------------------------------------------------------------------------
# cluster.py: its options, an unreachable scheduler, its --json, SIGTERM.

CLUSTER = ["cluster.py", "{tmp}/face.png", "--model", "{tmp}/model.pt", "--json", "{tmp}/k.jsonl"]


def free_port():
    """A local TCP port nothing listens on (a moment ago)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_case(name, extra, status, message, setup=None, argv=CLUSTER, unchanged=("k.jsonl",), **more):
    """A cluster.py row on {tmp}/face.png with a good tiny model, over an earlier run's {tmp}/k.jsonl."""
    return Case(name, [*argv, *extra], status, message, list(unchanged),
                steps(face_png, pt_model(), write("k.jsonl", OLD_JSON), setup), **more)


CASES += [
    cluster_case("cluster-scheduler-not-a-url", ["--scheduler", "not a url"], 2, "--scheduler not a url"),
    cluster_case("cluster-convention-the-model-lacks", ["--convention", "300w"], 2,
                 "model.pt: --convention 300w: the model has no 300w head"),
    cluster_case("cluster-timeout-nan", ["--scheduler", "tcp://127.0.0.1:8786", "--timeout", "nan"], 2,
                 "--timeout nan"),
    cluster_case("cluster-timeout-negative", ["--scheduler", "tcp://127.0.0.1:8786", "--timeout", "-1"], 2,
                 "--timeout -1"),
    # refused at once: no waiting out --timeout
    cluster_case("cluster-scheduler-refuses",
                 ["--scheduler", f"tcp://127.0.0.1:{free_port()}", "--timeout", "120"], 1,
                 "cannot connect (Connection refused)", seconds=30),
    cluster_case("cluster-json-disk-full", ["--workers", "1"], 1, "disk/k.jsonl: cannot write",
                 steps(small_disk, write("disk/k.jsonl", OLD_JSON), fill_disk),
                 argv=[*CLUSTER[:-1], "{tmp}/disk/k.jsonl"], unchanged=["disk/k.jsonl"],
                 check=no_temporary_file_in("disk"), cleanup=unmount("disk")),
    cluster_case("cluster-sigterm", ["--workers", "1"], 130, "interrupted; ",
                 interrupt_after=lambda tmp: handles(signal.SIGTERM)(tmp) and has_workers(tmp),
                 interrupt=signal.SIGTERM, check=no_temporary_file_in(".")),
]


# ---------------------------------------------------------------------------------------------
# The rest: bench.py's --out, the command's own name in its lines.

CASES += [
    # refused at once, before the hour of measurements
    Case("bench-out-is-the-shipped-model", ["bench.py", "--out", SHIPPED_PT_AS_TYPED], 2,
         "saved_models, which this run must leave as it is", [SHIPPED_PT], GUARD_SHIPPED_PT[0],
         cleanup=GUARD_SHIPPED_PT[1], seconds=30),
    Case("python-m-names-itself", ["-m", "facial_keypoints", "{tmp}/absent.png", "--out", "{tmp}/out"], 1,
         "python -m facial_keypoints: "),
]


# ---------------------------------------------------------------------------------------------
# Running a case.

@pytest.fixture(scope="module")
def launcher():
    """Starts each command as a process forked from a server that has already imported PyTorch,
    OpenCV, pandas and onnxruntime (PRELOAD): a fresh interpreter spends seconds on those imports,
    which the table could not afford. The command is otherwise run as `python` runs it: a process of
    its own with its own exit status and stderr, the script as __main__, its folder first on sys.path.
    One difference: the preloaded modules (and this file's imports: train, models, data_load...)
    were imported before the case's environment was set, so a module that reads FKP_DATA at
    import time instead of when it is used would see the test session's value."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def run_script(argv, env, stdout, stderr):
    """In the forked process: `python *argv` from the repository root, output to two files."""
    os.chdir(ROOT)
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    if argv[0] == "-m":  # python -m PACKAGE ...
        sys.argv = list(argv[1:])
        sys.path.insert(0, ROOT)
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        return
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    runpy.run_path(argv[0], run_name="__main__")


def run(launcher, case, tmp):
    """Run the case's command (its pid in {tmp}/pid, for handles()); returns (exit status, stdout,
    stderr)."""
    stdout, stderr = tmp / "stdout.txt", tmp / "stderr.txt"
    env = {"FKP_DATA": str(tmp / "data"), "OMP_NUM_THREADS": "1"}
    process = launcher.Process(target=run_script,
                               args=(filled(case.argv, tmp), env, str(stdout), str(stderr)))
    process.start()
    (tmp / "pid").write_text(str(process.pid))
    deadline, interrupt, family = time.time() + case.seconds, case.interrupt_after, []
    while process.is_alive() and time.time() < deadline:
        if interrupt and time_to_interrupt(interrupt, stdout, tmp):
            family = descendants(process.pid)
            os.kill(process.pid, case.interrupt)
            interrupt = None
        process.join(0.02)
    if process.is_alive():
        process.kill()
        pytest.fail(f"{case}: still running after {case.seconds}s")
    left = still_running(family)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{case}: processes left running after the interrupt: {left}"
    return process.exitcode, stdout.read_text(), stderr.read_text()


def time_to_interrupt(interrupt_after, stdout, tmp):
    if callable(interrupt_after):
        return interrupt_after(tmp)
    return stdout.exists() and interrupt_after in stdout.read_text()


def descendants(pid):
    """The processes started by `pid` and by its children, and so on (from /proc)."""
    parents = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # not a process, or gone meanwhile
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def still_running(pids, wait=5.0):
    """Those of `pids` still running (not a zombie) after up to `wait` seconds."""
    deadline = time.time() + wait
    while True:
        alive = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        alive.append(pid)
            except OSError:
                pass
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.05)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_and_loses_nothing(case, launcher, tmp_path):
    write_course_dataset(str(tmp_path / "data"), n_train=4)
    try:
        if case.setup:
            case.setup(tmp_path)
        before = {name: sha256(tmp_path / name) for name in case.unchanged}
        assert None not in before.values(), "the setup did not write every file of `unchanged`"

        status, stdout, stderr = run(launcher, case, tmp_path)

        lines = [line for line in stderr.splitlines() if line.strip()]
        assert "Traceback" not in stderr, stderr
        if case.message is None:
            assert not lines, stderr
        else:
            assert len(lines) == 1 and case.message in lines[0], stderr
        assert status == case.status, (status, stderr, stdout[-2000:])
        assert {name: sha256(tmp_path / name) for name in case.unchanged} == before
        if case.check:
            case.check(tmp_path)
    finally:
        if case.cleanup:
            case.cleanup(tmp_path)
