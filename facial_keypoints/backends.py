"""The network on one of two backends with the same NumPy interface: a float32 (N, 1, S, S) array of
face crops in [0, 1] goes in, the network's output comes out as it is: (N, 136) keypoints
normalised to [-1, 1] for a one-head model (models.Net), (N, heads, 136) for the two-head network
(models.TwoHeadNet), one row of 136 per labelling convention.

    model = load_backend()           # "auto": onnxruntime when installed and the export matches the .pt
    model = load_backend("torch")    # the shipped .pt on PyTorch (models.load_model)
    model = load_backend("onnx")     # its ONNX export on onnxruntime (export.py)
    model = load_backend(convention="course")   # read the course head (default: 300w, if it has one)
    keypoints = predict_normalized(model, crops, flip_average=True)   # (N, 68, 2), the chosen head's

Each model knows its `conventions` (model_conventions), in output order, and reads one of them,
its `convention` (use_convention): predict_normalized and the rest use that head only.
PyTorch is imported only by the torch backend: the onnx backend needs NumPy and onnxruntime.
Both check at load time that the model has the metadata detection needs and predicts finite numbers.
"""

import hashlib
import importlib.util
import json
import os
import sys

import cv2
import numpy as np

from .face_crop import FLIP_PERMUTATION, NUM_KEYPOINTS, crop_meta_problem
from .media import DataError, model_file_problem, one_line

# The shipped model lives inside the package, so that `pip install` brings it.
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "saved_models", "keypoints_model.pt")
DEFAULT_ONNX_MODEL = os.path.join(HERE, "saved_models", "keypoints_model.onnx")  # python export.py
DEFAULT_INT8_MODEL = os.path.join(HERE, "saved_models", "keypoints_model.int8.onnx")  # its int8 copy
default_threads = 0  # threads per model (0: the library's default, every core); limit_threads sets it
# The two-head network's conventions in the order of its output (models.CONVENTIONS; written out
# here because models.py needs PyTorch): a model whose metadata does not say gets these when it
# has two outputs per crop, the course's alone when it has one (models.Net).
TWO_HEAD_CONVENTIONS = ("course", "300w")
# What detection reads by default: 300-W's labelling is the one other tools and benchmarks use.
DEFAULT_CONVENTION = "300w"


def limit_threads(n):
    """Run OpenCV (the face detector), the models loaded from now on and PyTorch, if loaded, on `n`
    threads: a worker process that shares the cores with others, or a timing on a set thread count."""
    global default_threads
    default_threads = n
    cv2.setNumThreads(n)
    os.environ["OMP_NUM_THREADS"] = str(n)  # PyTorch, if it is imported later
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class TorchModel:
    """The PyTorch network from a .pt file (models.load_model). torch is imported here, when this
    backend is used, so that the onnx backend never loads it.

    `model` is the network as saved (what Notebook 3 prints); predictions run on
    models.inference_copy of it (batch norm merged into the convolutions, channels_last), which
    gives the same keypoints faster, unless `fuse` is False."""

    name = "torch"

    def __init__(self, model, meta=None, fuse=True, path=None):
        from models import inference_copy
        self.model, self.meta, self.fuse, self.path = model, meta, fuse, path
        self.runner = inference_copy(model) if fuse else model
        self.conventions = self.convention = None  # check_model sets them; a bare module: run_model

    @classmethod
    def load(cls, path, convention=None):
        # The network's code is the course's models.py, in a clone: `pip install .` brings the
        # ONNX files and onnxruntime only.
        check_model_file(path)
        if not installed("torch") or not installed("models"):
            raise DataError("the torch backend runs from a clone of the repository with its requirements "
                            "(models.py and PyTorch: pip install -r requirements.txt); --backend onnx "
                            "runs without them")
        from models import ModelFileError, load_model
        try:
            model = cls(*load_model(path), path=path)
        except ModelFileError as e:
            raise DataError(str(e)) from None
        check_model(model, path, convention)
        return model

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
    (0: onnxruntime's default, one per physical core; None: the module's `default_threads`)."""

    name = "onnx"

    def __init__(self, path, threads=None, convention=None):
        self.path = path
        check_model_file(path, hint=" (write it with `python export.py`)")
        self.model = onnx_session(path, threads)
        self.meta = json_values(self.model.get_modelmeta().custom_metadata_map)
        check_meta(self.meta, path)
        inputs = self.model.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise DataError(f"{path}: the graph takes {len(inputs)} inputs ({names}), not one batch of "
                            "face crops; export it again with `python export.py`")
        graph_input, graph_output = inputs[0], self.model.get_outputs()[0]
        size = self.meta["input_size"]
        if (list(graph_input.shape[1:]) != [1, size, size] or len(graph_output.shape) not in (2, 3)
                or graph_output.shape[-1] != 2 * NUM_KEYPOINTS):
            raise DataError(f"{path}: the graph takes {graph_input.shape} and gives {graph_output.shape}, "
                            f"not (batch, 1, {size}, {size}) -> (batch, {2 * NUM_KEYPOINTS}) or (batch, "
                            f"heads, {2 * NUM_KEYPOINTS}) as its metadata says; export it again with "
                            "`python export.py`")
        self.input_name = graph_input.name
        self.conventions = self.convention = None
        check_model(self, path, convention)

    def __call__(self, batch):
        return self.model.run(None, {self.input_name: batch})[0]


def onnx_session(path, threads=None):
    """An onnxruntime session for the ONNX file at `path`, on `threads` intra- and inter-op threads
    (0: onnxruntime's default, one per physical core; None: the module's `default_threads`); an
    unreadable file or a missing onnxruntime is a DataError."""
    try:
        import onnxruntime
    except ImportError:
        raise DataError("the onnx backend needs onnxruntime: pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = (
        default_threads if threads is None else threads)
    # No busy-waiting between passes: onnxruntime's threads otherwise spin on the cores after each
    # small forward pass, while the work between passes (image resizing, crops) needs them.
    for pool in ("intra_op", "inter_op"):
        options.add_session_config_entry(f"session.{pool}.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime has no public exception base class
        raise DataError(f"{path}: not a readable ONNX model ({one_line(e)})") from None


def json_values(metadata):
    """export.py stores each metadata value as JSON; other tools (onnxruntime's quantizer) add
    plain-text entries of their own, which are left out."""
    meta = {}
    for key, value in metadata.items():
        try:
            meta[key] = json.loads(value)
        except ValueError:
            pass
    return meta


def check_model_file(path, hint=""):
    """DataError naming `path` when it is not a file a model can be read from (model_file_problem)."""
    problem = model_file_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}{hint}")


def check_meta(meta, path):
    """DataError naming `path` when the model's crop metadata is missing or out of range
    (face_crop.crop_meta_problem): detection would crop faces with it."""
    problem = crop_meta_problem(meta or {})
    if problem:
        raise DataError(f"{path}: {problem}; use a model file that train.py (or export.py) wrote")


class ConventionError(DataError):
    """A convention the model has no head for: the option asked for it, so the command lines
    exit with status 2, as for their other bad options."""


def check_model(model, path, convention=None):
    """A model (its metadata checked at load) is usable when it predicts finite keypoints for a plain gray
    crop: a diverged training run saves NaN weights, and a graph that needs other inputs cannot
    run, which would otherwise fail later, on the first face. Its output's shape and metadata give
    its conventions (model_conventions); it then reads `convention` (use_convention)."""
    size = model.meta["input_size"]  # checked at load: check_meta, or models.load_model for a .pt
    probe = np.full((1, 1, size, size), 0.5, dtype=np.float32)
    try:
        keypoints = model(probe)
    except Exception as e:  # onnxruntime and PyTorch raise many kinds: any means the file is unusable
        raise DataError(f"{path}: the model cannot run on a face crop ({one_line(e)}); "
                        "use another model file") from None
    shape = np.shape(keypoints)
    if len(shape) not in (2, 3) or shape[0] != 1 or shape[-1] != 2 * NUM_KEYPOINTS:
        raise DataError(f"{path}: the model gives {shape} numbers for a crop, not (1, {2 * NUM_KEYPOINTS}) "
                        f"or (1, heads, {2 * NUM_KEYPOINTS}); use another model file")
    if not np.isfinite(keypoints).all():
        raise DataError(f"{path}: the model predicts non-finite numbers (a diverged training run?); "
                        "use another model file")
    model.conventions = model_conventions(model.meta, shape, path)
    use_convention(model, convention)


def model_conventions(meta, shape, path=None):
    """The labelling conventions of a model's output of `shape`, in output order: its metadata's
    `conventions` (train.py and export.py write them), else TWO_HEAD_CONVENTIONS for an (N, 2, 136)
    output and the course's alone for an (N, 136) one (models.Net, which predates the key)."""
    heads = shape[1] if len(shape) == 3 else 1
    conventions = (meta or {}).get("conventions")
    if conventions is None:
        conventions = TWO_HEAD_CONVENTIONS if heads == 2 else ("course",) if heads == 1 else None
    if (not isinstance(conventions, (list, tuple)) or len(conventions) != heads
            or not all(isinstance(c, str) and c for c in conventions) or len(set(conventions)) != heads):
        raise DataError(f"{path}: its metadata says conventions {conventions!r} for {heads} outputs per "
                        "crop, not one name each; use a model file that train.py (or export.py) wrote")
    return tuple(conventions)


def default_convention(conventions):
    """DEFAULT_CONVENTION when the model has that head, else its first (a one-head model's only one)."""
    return DEFAULT_CONVENTION if DEFAULT_CONVENTION in conventions else conventions[0]


def use_convention(model, convention=None):
    """Make a loaded model (its `conventions` known) read the head of `convention` (None:
    default_convention); ConventionError, naming the model file, for a head it does not have."""
    if convention is None:
        convention = default_convention(model.conventions)
    if convention not in model.conventions:
        raise ConventionError(f"{model.path}: --convention {convention}: the model has no {convention} "
                              f"head (only {', '.join(model.conventions)}); leave --convention out or give "
                              f"a model with a {convention} head")
    model.convention = convention


BACKENDS = {"torch": TorchModel.load, "onnx": OnnxModel}
DEFAULT_MODELS = {"torch": DEFAULT_MODEL, "onnx": DEFAULT_ONNX_MODEL}


def installed(package):
    return importlib.util.find_spec(package) is not None


def shipped_onnx_model(convention=None):
    """The first of the shipped ONNX files (int8, then float) that onnxruntime can run and that
    was exported from the shipped .pt (or any, when PyTorch is not installed); None if none."""
    if not installed("onnxruntime"):
        return None
    digest = sha256(DEFAULT_MODEL) if os.path.isfile(DEFAULT_MODEL) else None
    for path in (DEFAULT_INT8_MODEL, DEFAULT_ONNX_MODEL):
        if os.path.isfile(path):
            model = OnnxModel(path)
            if model.meta.get("source_sha256") == digest or not installed("torch"):
                use_convention(model, convention)  # of the file in use, not of a stale one
                return model
    return None


def load_backend(backend="auto", model_path=None, convention=None):
    """The network on a backend ("torch" or "onnx") from its file (default: the shipped one), with
    its backend's `name`, its file's `path`, its `conventions` and the one it reads,
    `convention` (use_convention: None picks default_convention), as attributes.

    "auto" picks by the file's extension when a file is given. For the shipped model it picks
    onnxruntime (faster per face than PyTorch, the int8 copy most) when it is
    installed and an ONNX file was exported from the shipped .pt (export.py records the .pt's
    SHA-256; shipped_onnx_model), or when PyTorch is not installed; otherwise PyTorch."""
    if backend == "auto":
        if model_path is not None:
            backend = "onnx" if model_path.lower().endswith(".onnx") else "torch"
        else:
            model = shipped_onnx_model(convention)
            if model is not None:
                return model
            backend = "torch"
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from auto, {', '.join(BACKENDS)}")
    return BACKENDS[backend](model_path or DEFAULT_MODELS[backend], convention=convention)


def predict_normalized(model, crops, flip_average=False):
    """(N, 1, S, S) crops in [0, 1] -> (N, 68, 2) keypoints in [-1, 1] crop coordinates, NumPy, read
    from the head of the model's `convention`.

    `model` is a TorchModel or OnnxModel (a PyTorch module is used as it is). With
    flip_average the mirrored crops are predicted too, mapped back (x -> -x, left/right points
    swapped) and averaged with the direct prediction: a little more accurate, twice the work.
    """
    if flip_average:
        direct, mirrored = predict_both_ways(model, crops)
        return (direct + mirrored) / 2
    return run_model(model, np.asarray(crops, dtype=np.float32))


def predict_both_ways(model, crops):
    """The keypoints of the crops and those of their mirror images mapped back (x -> -x,
    left/right points swapped), from one batch: (N, 68, 2) each."""
    crops = np.asarray(crops, dtype=np.float32)
    n = crops.shape[0]
    pred = run_model(model, np.concatenate([crops, crops[..., ::-1]]))
    return pred[:n], mapped_back(pred[n:])


def mapped_back(mirrored):
    """(N, 68, 2) keypoints read on mirror images, in [-1, 1] crop coordinates -> the same points
    on the crops themselves: x -> -x, and each left point swapped with its right one."""
    return mirrored[:, FLIP_PERMUTATION] * np.array([-1, 1], dtype=mirrored.dtype)


def run_model(model, batch):
    """(N, 1, S, S) float32 -> (N, 68, 2) on either backend (a bare PyTorch module works too), from
    the head of the model's `convention` only: the heads are never mixed. A bare two-head module
    has no metadata: its output's shape gives its conventions, and it reads default_convention's."""
    if not isinstance(model, (TorchModel, OnnxModel)):
        model = TorchModel(model, fuse=False)
    output = model(np.ascontiguousarray(batch))
    if output.ndim == 3:
        conventions = model.conventions or model_conventions(model.meta, output.shape, model.path)
        output = output[:, conventions.index(model.convention or default_convention(conventions))]
    return output.reshape(-1, NUM_KEYPOINTS, 2)
