"""Bad input loses nothing and shows no traceback: one table row per case.

Each Case runs one command of this repository as a user types it (`python train.py ...` from the
repository root, FKP_DATA pointing at a tiny dataset in the case's own folder; launcher() says how
the process is started) and expects its exit status, exactly one line on stderr containing
`message` (which names the file or option at fault), no traceback, and every file listed in
`unchanged` byte for byte as it was before.

To add a row, append a Case to CASES (or build one with a helper like train_case):
- argv: the command without `python`; "{tmp}" stands for the case's folder, which holds the tiny
  course-layout dataset at {tmp}/data (FKP_DATA) and whatever `setup(tmp)` writes first;
- unchanged: paths relative to that folder, compared by sha256 before and after the run;
- interrupt_after: send Ctrl-C (SIGINT) once stdout shows this text; check(tmp): more assertions.
Progress bars are drawn only on a terminal, so they do not count as stderr lines here.
"""

import hashlib
import json
import multiprocessing
import os
import runpy
import signal
import struct
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
# What a fresh `python train.py` spends its first seconds importing; see launcher().
PRELOAD = ["torch", "torchvision", "cv2", "numpy", "pandas", "PIL.Image", "matplotlib.figure", "tqdm",
           __name__]
TIMEOUT = 60  # seconds per case


@dataclass
class Case:
    name: str
    argv: list
    status: int
    message: str
    unchanged: list = field(default_factory=list)
    setup: object = None            # setup(tmp: Path) prepares the case's folder
    interrupt_after: str = None     # Ctrl-C once stdout contains this
    check: object = None            # check(tmp: Path) after the run

    def __str__(self):
        return self.name


# ---------------------------------------------------------------------------------------------
# Helpers for train.py rows: a tiny network, and the files a user may already have.

TRAIN = ["train.py", "--input-size", "32", "--widths", "4,4,4,4,4", "--batch-size", "2", "--epochs", "1",
         "--out", "{tmp}/model.pt"]
CSV = "training_frames_keypoints.csv"


def filled(argv, tmp):
    return [a.replace("{tmp}", str(tmp)) for a in argv]


def write_good_model(tmp, name="model.pt"):
    """A model as train.py saves one (untrained: only its bytes matter here)."""
    meta = dict(arch="net", input_size=32, model_options={"widths": [4] * 5, "hidden": 8},
                crop_margin=train.CROP_MARGIN, crop_shift=train.CROP_SHIFT, command="python train.py")
    save_model(Net(32, widths=[4] * 5, hidden=8), str(tmp / name), meta)


def train_here(tmp, *extra):
    """Run TRAIN in this process: a finished one-epoch run's model.pt and model.pt.ckpt."""
    train.main(filled(TRAIN[1:], tmp) + ["--data", str(tmp / "data"), *extra])


def edit_checkpoint(tmp, **changes):
    path = tmp / "model.pt.ckpt"
    ckpt = torch.load(path, weights_only=True)
    torch.save({**ckpt, **changes}, path)


def edit_csv(row, column, value):
    """A setup that sets one cell of the training CSV (row 1 = first face, column 0 = image name)."""
    def setup(tmp):
        path = tmp / "data" / CSV
        lines = path.read_text().splitlines()
        cells = lines[row].split(",")
        cells[column] = value
        lines[row] = ",".join(cells)
        path.write_text("\n".join(lines) + "\n")
    return setup


def cut_csv_row(tmp):
    path = tmp / "data" / CSV
    lines = path.read_text().splitlines()
    lines[2] = ",".join(lines[2].split(",")[:100])
    path.write_text("\n".join(lines) + "\n")


def train_case(name, extra, status, message, setup=None, unchanged=("model.pt",), **more):
    """A train.py row: TRAIN plus `extra`, over a good model already at --out."""
    def prepare(tmp):
        write_good_model(tmp)
        if setup:
            setup(tmp)
    return Case(name, TRAIN + extra, status, message, list(unchanged), prepare, **more)


def resume_case(name, extra, message, damage=None):
    """--resume after a finished run, its checkpoint first damaged by `damage(tmp)`."""
    def setup(tmp):
        train_here(tmp)
        if damage:
            damage(tmp)
    return train_case(name, ["--resume", *extra], 1, message, setup, unchanged=["model.pt", "model.pt.ckpt"])


def truncate_checkpoint(tmp):
    path = tmp / "model.pt.ckpt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def nan_model(tmp):
    model = Net(32, widths=[4] * 5, hidden=8)
    with torch.no_grad():
        model.head[-1].weight[0, 0] = float("nan")
    save_model(model, str(tmp / "nan.pt"), dict(arch="net", input_size=32, crop_margin=1.3, crop_shift=0.1,
                                                model_options={"widths": [4] * 5, "hidden": 8}))


def model_without_crop_margin(tmp):
    save_model(Net(32), str(tmp / "old.pt"), dict(arch="net", input_size=32, crop_shift=0.1))


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
    # Output paths: checked before the data is loaded.
    train_case("out-is-a-folder", ["--out", "{tmp}/folder"], 1, "is a folder",
               setup=lambda tmp: (tmp / "folder").mkdir()),
    train_case("out-under-a-file", ["--out", "{tmp}/model.pt/x.pt"], 1, "model.pt is a file, not a folder"),
    # The data: one bad cell names the CSV and the row.
    train_case("csv-blank-cell", [], 1, f"{CSV}: row 1", setup=edit_csv(1, 5, "")),
    train_case("csv-short-row", [], 1, f"{CSV}: row 2", setup=cut_csv_row),
    train_case("csv-no-image-name", [], 1, "has no image name", setup=edit_csv(1, 0, "")),
    train_case("csv-coordinate-1e30", [], 1, f"{CSV}: row 1", setup=edit_csv(1, 7, "1e30")),
    train_case("csv-image-missing", [], 1, "missing", setup=edit_csv(2, 0, "Person_absent_00.jpg")),
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
    train_case("new-run-over-unfinished-checkpoint", [], 1, "--resume",
               setup=lambda tmp: (train_here(tmp), edit_checkpoint(tmp, finished=False)),
               unchanged=["model.pt", "model.pt.ckpt"]),
    train_case("new-run-over-a-foreign-file", [], 1, "model.pt.ckpt exists and is not a train.py checkpoint",
               setup=lambda tmp: (tmp / "model.pt.ckpt").write_text("mine"), unchanged=["model.pt.ckpt"]),
    # Ctrl-C: the checkpoint of the last whole epoch stays, --out is untouched.
    train_case("ctrl-c", ["--epochs", "5000"], 130, "interrupted after epoch", interrupt_after="epoch   1/",
               check=checkpoint_intact),
]


# ---------------------------------------------------------------------------------------------
# Rows for the other commands: detect.py, evaluate.py, filters.py.

def face_png(tmp, name="face.png"):
    """The astronaut's face: a real photo the tiny model can be run on (its keypoints do not matter)."""
    from skimage import data
    cv2.imwrite(str(tmp / name), cv2.cvtColor(data.astronaut()[0:300, 100:400], cv2.COLOR_RGB2BGR))


def png_claiming(tmp, width=60000, height=60000):
    """A PNG whose header claims width x height pixels (the file itself is tiny)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    (tmp / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                   + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def onnx_model(tmp, name="model.onnx", input_size=32, graph_size=32, outputs=136):
    """A tiny ONNX file laid out as export.py writes one: crops (batch, 1, S, S) -> (batch, outputs),
    with metadata that says input_size (which may differ from the graph's S)."""
    import onnx
    from onnx import TensorProto, helper
    weights = helper.make_tensor("w", TensorProto.FLOAT, [graph_size * graph_size, outputs],
                                 [0.0] * (graph_size * graph_size * outputs))
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["crops"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["keypoints"])],
        "tiny",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", 1, graph_size, graph_size])],
        [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["batch", outputs])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    meta = dict(input_size=input_size, crop_margin=1.2, crop_shift=0.157, arch="net")
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.save(model, str(tmp / name))


def detect_case(name, extra, status, message, setup=None, unchanged=(), script="detect.py", inputs=(),
                **more):
    """A detect.py (or filters.py) row on {tmp}/face.png (and `inputs`) with the tiny model, output
    in {tmp}/out."""
    def prepare(tmp):
        face_png(tmp)
        write_good_model(tmp)
        if setup:
            setup(tmp)
    argv = [script, "{tmp}/face.png", *inputs, "--out", "{tmp}/out", "--model", "{tmp}/model.pt", *extra]
    return Case(name, argv, status, message, ["face.png", *unchanged], prepare, **more)


def evaluate_case(name, extra, status, message, setup=None, unchanged=()):
    """An evaluate.py row on the tiny dataset's test split with the tiny model."""
    def prepare(tmp):
        write_good_model(tmp)
        if setup:
            setup(tmp)
    argv = ["evaluate.py", "--model", "{tmp}/model.pt", "--csv", "{tmp}/data/test_frames_keypoints.csv",
            "--images", "{tmp}/data/test", *extra]
    return Case(name, argv, status, message, list(unchanged), prepare)


def cut_video(tmp):
    """An .avi of 40 frames cut to its first half: its header still says 40."""
    writer = cv2.VideoWriter(str(tmp / "whole.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), 6 * i, np.uint8))
    writer.release()
    data = (tmp / "whole.avi").read_bytes()
    (tmp / "cut.avi").write_bytes(data[: len(data) // 2])


def missing_test_image(tmp):
    path = tmp / "data" / "test_frames_keypoints.csv"
    lines = path.read_text().splitlines()
    lines[1] = "Person_absent_00.jpg," + lines[1].split(",", 1)[1]
    path.write_text("\n".join(lines) + "\n")


def annotated_copy_written(tmp):
    assert list((tmp / "out").glob("cut*.mp4")), "the frames read were not kept"


CASES += [
    detect_case("detect-camera-negative", ["--camera", "-1"], 2, "--camera -1"),
    detect_case("detect-scale-factor-nan", ["--scale-factor", "nan"], 2, "--scale-factor nan"),
    detect_case("detect-detect-every-0", ["--detect-every", "0"], 2, "--detect-every"),
    detect_case("detect-json-is-the-input", ["--json", "{tmp}/face.png"], 1,
                "face.png: is one of the inputs"),
    detect_case("detect-json-disk-full", ["--json", "/dev/full"], 1, "/dev/full: cannot write"),
    detect_case("detect-out-is-a-file", ["--out", "{tmp}/face.png"], 1, "face.png: is a file"),
    detect_case("detect-image-claims-60000-squared", [], 1, "over the limit of 100 megapixels",
                setup=png_claiming, inputs=["{tmp}/huge.png"]),
    detect_case("detect-model-without-crop-margin", ["--model", "{tmp}/old.pt"], 1, "crop_margin",
                setup=model_without_crop_margin),
    detect_case("detect-model-nan-weights", ["--model", "{tmp}/nan.pt"], 1, "non-finite", setup=nan_model),
    detect_case("detect-onnx-size-differs-from-its-graph",
                ["--backend", "onnx", "--model", "{tmp}/model.onnx"], 1, "export it again",
                setup=lambda tmp: onnx_model(tmp, input_size=40)),
    detect_case("detect-onnx-not-136-outputs", ["--backend", "onnx", "--model", "{tmp}/model.onnx"],
                1, "export it again", setup=lambda tmp: onnx_model(tmp, outputs=10)),
    detect_case("detect-truncated-video", [], 1, "cut.avi: the video ends after", setup=cut_video,
                inputs=["{tmp}/cut.avi"], check=annotated_copy_written),
    detect_case("filters-model-without-crop-margin", ["--model", "{tmp}/old.pt"], 1, "crop_margin",
                setup=model_without_crop_margin, script="filters.py"),
    evaluate_case("evaluate-model-without-crop-margin", ["--model", "{tmp}/old.pt"], 1, "crop_margin",
                  setup=model_without_crop_margin),
    evaluate_case("evaluate-plot-under-a-file", ["--plot", "{tmp}/model.pt/ced.png"], 2, "--plot"),
    evaluate_case("evaluate-image-missing", [], 1, "missing from", setup=missing_test_image),
    evaluate_case("evaluate-rotate-nan", ["--rotate", "nan"], 2, "--rotate"),
]


# ---------------------------------------------------------------------------------------------
# Running a case.

@pytest.fixture(scope="module")
def launcher():
    """Starts each command as a process forked from a server that has already imported PyTorch,
    OpenCV and pandas (PRELOAD): a fresh interpreter spends seconds on those imports, which the
    table could not afford. The command is otherwise run as `python` runs it: a process of its
    own with its own exit status and stderr, the script as __main__, its folder first on sys.path.
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
    sys.argv = list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
    runpy.run_path(argv[0], run_name="__main__")


def run(launcher, case, tmp):
    """Run the case's command; returns (exit status, stdout, stderr)."""
    stdout, stderr = tmp / "stdout.txt", tmp / "stderr.txt"
    env = {"FKP_DATA": str(tmp / "data"), "OMP_NUM_THREADS": "1"}
    process = launcher.Process(target=run_script,
                               args=(filled(case.argv, tmp), env, str(stdout), str(stderr)))
    process.start()
    deadline, interrupt = time.time() + TIMEOUT, case.interrupt_after
    while process.is_alive() and time.time() < deadline:
        if interrupt and stdout.exists() and interrupt in stdout.read_text():
            os.kill(process.pid, signal.SIGINT)
            interrupt = None
        process.join(0.02)
    if process.is_alive():
        process.kill()
        pytest.fail(f"{case}: still running after {TIMEOUT}s")
    return process.exitcode, stdout.read_text(), stderr.read_text()


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_one_line_and_loses_nothing(case, launcher, tmp_path):
    write_course_dataset(str(tmp_path / "data"), n_train=4)
    if case.setup:
        case.setup(tmp_path)
    before = {name: sha256(tmp_path / name) for name in case.unchanged}
    assert None not in before.values(), "the setup did not write every file of `unchanged`"

    status, stdout, stderr = run(launcher, case, tmp_path)

    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and case.message in lines[0], stderr
    assert status == case.status, (status, stderr, stdout[-2000:])
    assert {name: sha256(tmp_path / name) for name in case.unchanged} == before
    if case.check:
        case.check(tmp_path)
