"""ONNX deployment: export.py writes a model onnxruntime runs like PyTorch, and the onnx backend of
detect.py and evaluate.py runs the same pipeline without importing PyTorch."""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import face_keypoints, write_course_dataset, write_training_split
from skimage import data

import evaluate
import export
from facial_keypoints import backends, detect, media
from models import Net, TwoHeadNet, save_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_PT = os.path.join(ROOT, "facial_keypoints", "saved_models", "keypoints_model.pt")
SHIPPED_ONNX = os.path.join(ROOT, "facial_keypoints", "saved_models", "keypoints_model.onnx")


def python(code, timeout=300):
    """Run Python code in a fresh interpreter from the repository root; returns the result."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", autouse=True)
def keep_torch_random_state():
    """Leave PyTorch's global random state as this module found it (building a model draws from
    it): tests of other modules draw their random models from it."""
    with torch.random.fork_rng():
        yield


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A small untrained Net saved like train.py saves one, and its ONNX export (random check
    crops: FKP_DATA points nowhere)."""
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    options = {"widths": [4, 8, 8, 16, 16], "hidden": 32, "head": "regression"}  # lists: metadata is JSON
    meta = {"arch": "net", "input_size": 48, "model_options": options, "crop_margin": 1.3,
            "crop_shift": 0.1, "pixel_scale": "gray / 255", "val_nme": None}
    pt, onnx_path = str(tmp / "small.pt"), str(tmp / "out" / "small.onnx")
    save_model(Net(48, **options), pt, meta)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FKP_DATA", str(tmp / "nowhere"))
        difference = export.main(["--model", pt, "--out", onnx_path, "--crops", "6"])
    return pt, onnx_path, meta, difference


def test_export_writes_a_checked_onnx_model_with_its_metadata(small_model):
    pt, onnx_path, meta, difference = small_model
    assert 0 <= difference <= export.TOLERANCE
    assert os.listdir(os.path.dirname(onnx_path)) == ["small.onnx"]  # no temporary file left
    model = backends.OnnxModel(onnx_path)
    for key, value in meta.items():
        assert model.meta[key] == value, key
    assert model.meta["conventions"] == ["course"]  # a one-head Net's output: the course's labelling
    with open(pt, "rb") as f:
        assert model.meta["source_sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_exported_model_takes_any_batch_size_and_matches_pytorch(small_model):
    pt, onnx_path, _, _ = small_model
    onnx_model, torch_model = backends.OnnxModel(onnx_path, threads=1), backends.TorchModel.load(pt)
    crops = np.random.default_rng(1).random((5, 1, 48, 48), dtype=np.float32)
    for batch in (crops[:1], crops):
        out = onnx_model(batch)
        assert out.shape == (len(batch), 136)
        np.testing.assert_allclose(out, torch_model(batch), atol=export.TOLERANCE)
    flip_onnx = backends.predict_normalized(onnx_model, crops, flip_average=True)
    # a PyTorch module is accepted as well, and run as it is (no inference copy)
    flip_torch = backends.predict_normalized(torch_model.model, crops, flip_average=True)
    assert flip_onnx.shape == (5, 68, 2)
    np.testing.assert_allclose(flip_onnx, flip_torch, atol=export.TOLERANCE)


def test_export_replaces_nothing_when_the_backends_disagree(small_model, tmp_path, monkeypatch):
    pt, previous = small_model[0], small_model[1]
    out = tmp_path / "m.onnx"
    shutil.copy(previous, out)
    monkeypatch.setenv("FKP_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(export, "max_difference", lambda *args: 0.5)
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--model", pt, "--out", str(out), "--crops", "2"])
    assert "differ" in str(exit_info.value) and "\n" not in str(exit_info.value)
    assert out.read_bytes() == open(previous, "rb").read() and sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_an_int8_copy_that_cannot_be_written_is_one_line_and_keeps_the_old_one(small_model, tmp_path,
                                                                                monkeypatch):
    """A full disk when the int8 copy is written: the float export stands, the old copy stays."""
    pt, previous = small_model[0], small_model[1]
    out, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    shutil.copy(previous, int8)
    write_course_dataset(str(tmp_path / "data"), n_train=4)
    monkeypatch.setenv("FKP_DATA", str(tmp_path / "data"))

    def disk_full(float_path, path, calibration, heads=1):
        open(path, "wb").close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(export, "quantize_int8", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--model", pt, "--out", str(out), "--crops", "2", "--int8-crops", "2"])
    assert str(exit_info.value) == (f"export.py: {int8}: cannot write it (No space left on device); "
                                    f"{out} was written, the int8 copy was not")
    assert int8.read_bytes() == open(previous, "rb").read() and out.exists()
    assert sorted(os.listdir(tmp_path)) == ["data", "m.int8.onnx", "m.onnx"]


def test_export_of_a_bad_model_file_is_a_one_line_error(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    for path in (tmp_path / "junk.pt", tmp_path / "absent.pt"):
        with pytest.raises(SystemExit) as exit_info:
            export.main(["--model", str(path), "--out", str(tmp_path / "m.onnx")])
        assert str(path) in str(exit_info.value) and "\n" not in str(exit_info.value)
    assert not (tmp_path / "m.onnx").exists()


def test_shipped_onnx_model_is_exported_from_the_shipped_model():
    """saved_models/keypoints_model.onnx must follow keypoints_model.pt: `python export.py`."""
    meta = backends.OnnxModel(SHIPPED_ONNX).meta
    with open(SHIPPED_PT, "rb") as f:
        assert meta["source_sha256"] == hashlib.sha256(f.read()).hexdigest(), \
            "saved_models/keypoints_model.onnx is out of date: run `python export.py`"


def test_onnx_threads_do_not_spin_between_passes():
    """Spinning onnxruntime threads take the cores from OpenCV's cascade between forward passes."""
    options = backends.OnnxModel(SHIPPED_ONNX).model.get_session_options()
    for pool in ("intra_op", "inter_op"):
        assert options.get_session_config_entry(f"session.{pool}.allow_spinning") == "0"


def test_onnx_backend_runs_the_pipeline_without_pytorch():
    """Detection, refinement, flip averaging and video tracking on onnxruntime, in a fresh
    interpreter that never imports torch; the keypoints match the torch backend's."""
    result = python(
        "import json, sys\n"
        "from skimage import data\n"
        "from facial_keypoints import detect, tracking\n"
        "detector = detect.KeypointDetector(backend='onnx')\n"
        "faces = detector.detect(data.astronaut())\n"
        "refined = detect.KeypointDetector(backend='onnx', refine=True).detect(data.astronaut())\n"
        "tracker = tracking.FaceTracker(detector)\n"
        "tracked = [tracker(data.astronaut()) for _ in range(3)][-1]\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]\n"
        "print(json.dumps([[f.keypoints.tolist() for f in r] for r in (faces, refined, tracked)]))\n")
    assert result.returncode == 0, result.stderr[-3000:]
    onnx_faces, onnx_refined, onnx_tracked = (np.array(r) for r in json.loads(result.stdout))
    assert onnx_faces.shape == (1, 68, 2) and onnx_refined.shape == (1, 68, 2) and len(onnx_tracked) == 1
    from skimage import data
    torch_faces = detect.KeypointDetector(backend="torch").detect(data.astronaut())
    torch_refined = detect.KeypointDetector(backend="torch", refine=True).detect(data.astronaut())
    # 1e-4 in normalised coordinates is ~0.01 px on this face; the crop matrices are the same
    np.testing.assert_allclose(onnx_faces[0], torch_faces[0].keypoints, atol=0.05)
    np.testing.assert_allclose(onnx_refined[0], torch_refined[0].keypoints, atol=0.05)


@pytest.mark.parametrize("module", ["facial_keypoints", "facial_keypoints.face_crop",
                                    "facial_keypoints.media", "metrics", "facial_keypoints.backends",
                                    "facial_keypoints.tracking", "facial_keypoints.detect", "detect",
                                    "filters", "get_data"])
def test_modules_below_training_import_no_pytorch(module):
    result = python(f"import sys, {module}; assert 'torch' not in sys.modules, 'torch loaded'")
    assert result.returncode == 0, result.stderr


def test_onnx_backend_runs_without_pytorch():
    script = ("import sys; from facial_keypoints import detect; from skimage import data; "
              "faces = detect.KeypointDetector(backend='onnx').detect(data.astronaut()); "
              "assert len(faces) == 1; assert 'torch' not in sys.modules, 'torch loaded'")
    result = python(script)
    assert result.returncode == 0, result.stderr


def test_detect_cli_onnx_backend_and_a_missing_onnx_model(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "detect.py"), "--backend", "onnx", "--out",
                          str(tmp_path / "out"), "--json", str(tmp_path / "k.jsonl")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "k.jsonl") as f:
        record = json.loads(f.readline())
    assert record["image"] == "skimage.data.astronaut" and len(record["faces"]) == 1
    missing = tmp_path / "absent.onnx"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "detect.py"), "--backend", "onnx", "--model",
                          str(missing)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and str(missing) in run.stderr and "export.py" in run.stderr


def test_evaluate_gives_the_same_predictions_on_both_backends(tmp_path):
    """A real face (the astronaut, labelled with the PyTorch pipeline's own keypoints): on it each
    refine crop settles, so the two backends' last keypoints agree as their outputs do. (On noise
    images, which no crop settles on, three passes amplify their 1e-6 differences.)"""
    photo = data.astronaut()
    assert cv2.imwrite(str(tmp_path / "astronaut.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    labels = detect.KeypointDetector(backend="torch").detect(photo)[0].keypoints
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text("," + ",".join(map(str, range(136))) + "\nastronaut.png,"
                        + ",".join(f"{v:.2f}" for v in labels.ravel()) + "\n")
    results = {backend: evaluate.evaluate(protocol="labelled-box", csv_file=str(csv_file),
                                          images_dir=str(tmp_path), progress=False, backend=backend)
               for backend in ("torch", "onnx")}
    assert np.isfinite(results["onnx"]["pred"]).all()
    np.testing.assert_allclose(results["onnx"]["pred"], results["torch"]["pred"], atol=0.05)


def test_the_integral_head_exports_and_keeps_its_output_layer_float(tmp_path, monkeypatch):
    """The integral head's decoding (a softmax over each map) exports, takes any batch size and
    matches PyTorch; int8 would leave the first and the head's convolution float."""
    head = "integral"
    import onnx
    torch.manual_seed(0)
    options = {"widths": [4, 8, 8, 16, 16], "head": head}
    meta = {"arch": "net", "input_size": 48, "model_options": options, "crop_margin": 1.3,
            "crop_shift": 0.1, "pixel_scale": "gray / 255", "val_nme": None}
    pt, onnx_path = str(tmp_path / "integral.pt"), str(tmp_path / "integral.onnx")
    save_model(Net(48, **options), pt, meta)
    monkeypatch.setenv("FKP_DATA", str(tmp_path / "nowhere"))
    assert export.main(["--model", pt, "--out", onnx_path, "--crops", "6"]) <= export.TOLERANCE
    onnx_model, torch_model = backends.OnnxModel(onnx_path, threads=1), backends.TorchModel.load(pt)
    crops = np.random.default_rng(2).random((5, 1, 48, 48), dtype=np.float32)
    for batch in (crops[:1], crops):
        np.testing.assert_allclose(onnx_model(batch), torch_model(batch), atol=export.TOLERANCE)
    nodes = onnx.load(onnx_path).graph.node
    convs = [node.name for node in nodes if node.op_type == "Conv"]
    assert export.float_layers(nodes) == [convs[0], convs[-1]]


def test_regression_head_keeps_only_its_first_convolution_float(small_model):
    import onnx
    nodes = onnx.load(small_model[1]).graph.node
    convs = [node.name for node in nodes if node.op_type == "Conv"]
    assert export.float_layers(nodes) == convs[:1]


def test_int8_quantizes_only_the_layers_with_weights(tmp_path, monkeypatch):
    """The integral head's softmax and weighted sums stay float in the int8 copy (quantized, they
    cost the shipped model 0.17 NME points): nothing a Softmax reads comes from a DequantizeLinear,
    while the middle convolutions' weights are quantized."""
    import onnx
    torch.manual_seed(0)
    options = {"widths": [4, 8, 8, 16, 16], "head": "integral"}
    meta = {"arch": "net", "input_size": 48, "model_options": options, "crop_margin": 1.3,
            "crop_shift": 0.1, "pixel_scale": "gray / 255", "val_nme": None}
    pt, onnx_path, int8 = str(tmp_path / "i.pt"), str(tmp_path / "i.onnx"), str(tmp_path / "i.int8.onnx")
    save_model(Net(48, **options), pt, meta)
    monkeypatch.setenv("FKP_DATA", str(tmp_path / "nowhere"))
    export.main(["--model", pt, "--out", onnx_path, "--crops", "6", "--no-int8"])
    calibration = np.random.default_rng(3).random((8, 1, 48, 48), dtype=np.float32)
    export.quantize_int8(onnx_path, int8, calibration)
    nodes = onnx.load(int8).graph.node
    made_by = {out: node.op_type for node in nodes for out in node.output}
    softmax_inputs = [made_by.get(name) for node in nodes if node.op_type == "Softmax" for name in node.input]
    assert softmax_inputs and "DequantizeLinear" not in softmax_inputs
    conv_inputs = [made_by.get(name) for node in nodes if node.op_type == "Conv" for name in node.input]
    assert conv_inputs.count("DequantizeLinear") >= 2 * 4  # activations and weights of the inner convs


# ---------------------------------------------------------------------------------------------
# The two-head network: one output per labelling convention, both exported, both checked in int8.

# No "conventions" key (train.py writes one): export.py states the output's conventions itself.
TWO_HEAD_META = {"arch": "twohead-net", "input_size": 48, "model_options": {"widths": [4, 8, 8, 16, 16]},
                 "crop_margin": 1.3, "crop_shift": 0.1, "pixel_scale": "gray / 255", "val_nme": None,
                 "trained_on": ["course data", "in-the-wild set"],
                 "data_terms": "research and non-commercial use"}


def write_wild_set(root, seed=1):
    """A tiny in-the-wild set in fkp-wild's layout (`<source>-<photo>_<face>.jpg`): two faces of a
    photo of the committed validation split, two of other photos."""
    rng = np.random.default_rng(seed)
    val_photo = sorted(media.wild_val_photos())[0]
    names = [f"{val_photo}_1.jpg", f"{val_photo}_2.jpg", "lfpw-0001_0.jpg", "helen-123_1.jpg"]
    samples = [(name, rng.integers(0, 256, (120, 110, 3), dtype=np.uint8),
                face_keypoints(center=(55 + i, 62), scale=0.7)) for i, name in enumerate(names)]
    return write_training_split(str(root), samples)


@pytest.fixture(scope="module")
def two_head_export(tmp_path_factory):
    """A small untrained two-head network saved as train.py saves one, a tiny course set and a
    tiny wild set, and export.py's float and int8 files of it."""
    tmp = tmp_path_factory.mktemp("twohead")
    torch.manual_seed(0)
    model = TwoHeadNet(48, backbone="net", widths=[4, 8, 8, 16, 16]).eval()
    pt, onnx_path = str(tmp / "twohead.pt"), str(tmp / "out" / "twohead.onnx")
    save_model(model, pt, TWO_HEAD_META)
    write_course_dataset(str(tmp / "data"), n_train=6, n_test=4)
    write_wild_set(tmp / "wild")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FKP_DATA", str(tmp / "data"))
        mp.setenv("FKP_WILD", str(tmp / "wild"))
        difference = export.main(["--model", pt, "--out", onnx_path, "--crops", "4", "--int8-crops", "4"])
    return model, pt, onnx_path, difference, tmp


def torch_output(model, crops):
    with torch.no_grad():
        return model(torch.from_numpy(crops)).numpy()


def test_a_two_head_export_gives_both_heads_in_float_and_int8_with_their_conventions(two_head_export):
    import onnxruntime
    model, _, onnx_path, difference, _ = two_head_export
    assert 0 <= difference <= export.TOLERANCE
    assert sorted(os.listdir(os.path.dirname(onnx_path))) == ["twohead.int8.onnx", "twohead.onnx"]
    crops = np.random.default_rng(4).random((5, 1, 48, 48), dtype=np.float32)
    for path in (onnx_path, export.int8_path(onnx_path)):
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        assert [o.shape for o in session.get_outputs()] == [["batch", 2, 136]]
        for batch in (crops[:1], crops):
            assert session.run(None, {"crops": batch})[0].shape == (len(batch), 2, 136)
        meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()
                if not k.startswith("onnx.")}  # the quantizer's own entries
        assert meta["conventions"] == ["course", "300w"]
        for key in ("trained_on", "data_terms", "arch", "crop_margin"):  # the .pt's metadata, copied whole
            assert meta[key] == TWO_HEAD_META[key], key
        assert "(batch, 2, 136)" in meta["output"]
    float_out = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(
        None, {"crops": crops})[0]
    np.testing.assert_allclose(float_out, torch_output(model, crops), atol=export.TOLERANCE)


def test_the_int8_copy_agrees_with_pytorch_on_each_head(two_head_export, monkeypatch):
    """Each head of the int8 copy, on its own convention's check faces (course test faces; the wild
    validation photos' faces), flip-averaged as detection reads a crop: its NME within
    INT8_TOLERANCE of PyTorch's, and its points close to PyTorch's."""
    model, _, onnx_path, _, tmp = two_head_export
    monkeypatch.setenv("FKP_DATA", str(tmp / "data"))
    monkeypatch.setenv("FKP_WILD", str(tmp / "wild"))
    run_int8 = export.onnx_runner(export.int8_path(onnx_path))
    for head, convention in enumerate(["course", "300w"]):
        crops, keypoints = export.dataset_crops(*export.labelled_faces(convention, "check"), 48, 4)
        assert len(crops) == (4 if convention == "course" else 2)  # wild: the validation photo's faces
        nme_torch, _ = export.crop_reading(lambda c: torch_output(model, c), crops, keypoints, head)
        nme_int8, _ = export.crop_reading(run_int8, crops, keypoints, head)
        assert abs(nme_int8 - nme_torch) <= export.INT8_TOLERANCE, convention
        difference = np.abs(run_int8(crops)[:, head] - torch_output(model, crops)[:, head]).max()
        assert difference < 0.01, (convention, difference)  # normalised coordinates: under 0.25 px here


def test_two_head_int8_keeps_the_first_convolution_and_both_heads_float(two_head_export):
    import onnx
    _, _, onnx_path, _, _ = two_head_export
    graph = onnx.load(onnx_path).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    heads = [node.name for node in convs if shapes[node.input[1]][0] == 3 * 68]  # a map head: 3 maps a point
    assert len(heads) == 2
    assert export.float_layers(graph.node, heads=2) == [convs[0].name, *heads]
    int8 = onnx.load(export.int8_path(onnx_path)).graph
    made_by = {out: node.op_type for node in int8.node for out in node.output}
    int8_convs = [node for node in int8.node if node.op_type == "Conv"]
    weights_from = [made_by.get(node.input[1], "float") for node in int8_convs]
    assert weights_from[0] == weights_from[-1] == weights_from[-2] == "float"
    assert weights_from[1:-2] == ["DequantizeLinear"] * (len(int8_convs) - 3)


@pytest.mark.parametrize("readings, named", [
    # (NME %, % dropped by the face check): float then int8, the course head's, then the 300w head's
    ([(4.0, 0.0), (4.0, 0.0), (3.0, 0.0), (3.0 + 2 * export.INT8_TOLERANCE, 0.0)],
     "NME points on the 300w head"),
    ([(4.0, 0.5), (4.0, 0.5 + 2 * export.INT8_DROPPED), (3.0, 0.0), (3.0, 0.0)],
     "course-head crops to the face check"),
])
def test_no_int8_copy_when_a_head_loses_accuracy(two_head_export, tmp_path, monkeypatch, readings, named):
    """A head losing more than INT8_TOLERANCE NME points, or dropping INT8_DROPPED % more crops to
    the face check, refuses the int8 copy, even when the other head keeps its accuracy: one line
    naming what was lost, the old copy kept."""
    _, pt, previous, _, tmp = two_head_export
    out, int8 = tmp_path / "m.onnx", tmp_path / "m.int8.onnx"
    shutil.copy(export.int8_path(previous), int8)
    monkeypatch.setenv("FKP_DATA", str(tmp / "data"))
    monkeypatch.setenv("FKP_WILD", str(tmp / "wild"))
    readings = iter(readings)
    monkeypatch.setattr(export, "crop_reading", lambda *args: next(readings))
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--model", pt, "--out", str(out), "--crops", "2", "--int8-crops", "2"])
    message = str(exit_info.value)
    assert "not written" in message and named in message and message.split("loses")[1].count("head") == 1
    assert "\n" not in message
    assert int8.read_bytes() == open(export.int8_path(previous), "rb").read()
    assert sorted(os.listdir(tmp_path)) == ["m.int8.onnx", "m.onnx"]


def test_a_two_head_model_without_a_wild_set_gets_no_int8_copy(two_head_export, tmp_path, monkeypatch,
                                                                capsys):
    """Its 300w head could be neither calibrated nor checked: the float export is written, the int8
    copy is not, and a note says why."""
    _, pt, _, _, tmp = two_head_export
    monkeypatch.setenv("FKP_DATA", str(tmp / "data"))
    monkeypatch.setenv("FKP_WILD", str(tmp_path / "no-wild"))
    export.main(["--model", pt, "--out", str(tmp_path / "m.onnx"), "--crops", "2", "--int8-crops", "2"])
    assert "no in-the-wild set" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_the_onnx_backend_reads_either_head_of_the_export(two_head_export):
    model, _, onnx_path, _, _ = two_head_export
    crops = np.random.default_rng(5).random((3, 1, 48, 48), dtype=np.float32)
    expected = torch_output(model, crops)
    for head, convention in enumerate(["course", "300w"]):
        backend = backends.OnnxModel(onnx_path, threads=1, convention=convention)
        assert backend.conventions == ("course", "300w") and backend.convention == convention
        np.testing.assert_allclose(backends.predict_normalized(backend, crops),
                                   expected[:, head].reshape(3, 68, 2), atol=export.TOLERANCE)
