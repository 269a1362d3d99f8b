"""Export the keypoint model to ONNX, for onnxruntime and anything else that runs ONNX.

    python export.py             # the shipped facial_keypoints/saved_models/keypoints_model.pt ->
                                 #   keypoints_model.onnx and its int8 copy keypoints_model.int8.onnx
                                 #   (and the face detector's ONNX copy, when it is not up to date)
    python export.py --model saved_models/trained_model.pt --out /tmp/trained_model.onnx --no-int8

The ONNX model takes what the PyTorch model takes, float32 face crops `crops` of shape
(batch, 1, S, S) with values gray / 255, for any batch size, and returns `keypoints`: x0, y0 ..
x67, y67 normalised to [-1, 1] in crop coordinates, (batch, 136) for a single-head network (Net),
(batch, 2, 136) for the two-head network (models.TwoHeadNet), [:, i] in the labelling convention
`conventions[i]`. The model's metadata (input_size, crop_margin, crop_shift, pixel scale, keypoint
normalisation, arch, training command, what it was trained on...: every key the .pt file holds)
and where it came from are stored in the file's metadata_props, one key per field, each value
JSON, with `conventions` (the JSON list of the output's conventions, in order: ["course", "300w"]
for the two-head network, ["course"] for the others), so `detect.py --backend onnx` needs nothing
but the .onnx file.

The file is written next to --out first and checked before it replaces --out: onnxruntime and
PyTorch predict the same test crops (data_load's test split, detection's crop), at batch 1 and
batch N, within 1e-4 in normalised coordinates; otherwise nothing is replaced and the exit
status is 1. Exporter: torch.onnx.export with dynamo=True (PyTorch's default, needs onnxscript).

The int8 copy (<out>.int8.onnx, what detect.py's "auto" backend runs) is onnxruntime's static
quantization of the checked float model: weights int8 per channel, activations uint8 with ranges
calibrated on CALIBRATION_CROPS augmented training crops of each convention's set (the course
data; for the two-head network also the in-the-wild set, media.wild_dir(), less its validation
photos). The first convolution (one gray input channel) and each map head's 1x1 convolution stay
float (float_layers): quantizing them costs accuracy, and little time is spent there. Only layers
with weights (Conv, Gemm) and the ReLU6 clips that follow convolutions (Clip, EfficientNet's) are
quantized: the integral head's softmax and weighted sums stay float.
It replaces the old copy only if, for every head, its NME on that convention's check crops (the
course head on the course test faces, the 300w head on the wild validation photos' faces,
media.wild_val_photos()) is within INT8_TOLERANCE points of the float model's, and the face check
drops no more than INT8_DROPPED percentage points more of them than of the float model's
(crop_reading). Calibration and checks need those sets; without them no int8 copy is written.

The face detector's ONNX copy (blazeface.BLAZEFACE_MODEL, which the package runs) is MediaPipe's
TFLite file (blazeface.BLAZEFACE_TFLITE) rebuilt in PyTorch (models.BlazeFace): export.py writes
it when it is missing or was exported from another TFLite file (its metadata's source_sha256),
and only if onnxruntime reads noise images as OpenCV reads the TFLite file, within
FACE_DETECTOR_TOLERANCE.
"""

import json
import os
import sys
import time
import warnings

import numpy as np
import torch

from data_load import CachedFaceDataset
from facial_keypoints.backends import (
    DEFAULT_MODEL,
    DEFAULT_ONNX_MODEL,
    TorchModel,
    check_meta,
    check_model_file,
    mapped_back,
    onnx_session,
    sha256,
)
from facial_keypoints.blazeface import BLAZEFACE_MODEL, BLAZEFACE_TFLITE
from facial_keypoints.detect import MAX_FLIP_DISAGREEMENT, flip_disagreement
from facial_keypoints.face_crop import NUM_KEYPOINTS
from facial_keypoints.media import (
    DataError,
    OneLineParser,
    data_path,
    in_wild_val_photos,
    one_line,
    read_keypoints_csv,
    wild_csv,
    wild_dir,
    wild_images,
)
from facial_keypoints.outputs import reserve_file_output
from metrics import nme_per_face
from models import CONVENTIONS, ModelFileError, TwoHeadNet, blazeface_from_tflite, load_model

OPSET = 18         # the oldest opset PyTorch's exporter implements natively; onnxruntime >= 1.14 runs it
TOLERANCE = 1e-4   # max |onnxruntime - PyTorch|, normalised coordinates (1e-4 * 56 px ~ 0.006 px)
INT8_TOLERANCE = 0.05   # NME points the int8 copy may lose against the float model on the check crops
# Percentage points of check crops the int8 copy may drop to the face check beyond the float model's:
# a rounding that reads a crop and its mirror image differently costs faces, not NME.
INT8_DROPPED = 1.0
CALIBRATION_CROPS = 300  # per convention's training set
CHECK_BATCH = 128  # crops per onnxruntime call in the checks: a whole check set at once needs gigabytes
FACE_DETECTOR_TOLERANCE = 1e-3  # max |onnxruntime - OpenCV's TFLite|: score logits, input pixels
FACE_DETECTOR_SHAPES = ((128, 128), (176, 240))  # the check's inputs: one square, one not


def output_conventions(model):
    """The labelling conventions of the model's outputs, in their order: the two-head network's
    models.CONVENTIONS; a single-head network's the course's, the only data it trains on."""
    return list(CONVENTIONS) if isinstance(model, TwoHeadNet) else ["course"]


def onnx_metadata(meta, model_path, digest, conventions):
    """The .pt metadata plus the export's own, as metadata_props: one key per field, JSON values.
    Every key of the .pt's metadata is copied (what the model was trained on, its data's terms)."""
    size = meta["input_size"]
    heads = len(conventions)
    shape = f"(batch, {heads}, {2 * NUM_KEYPOINTS})" if heads > 1 else f"(batch, {2 * NUM_KEYPOINTS})"
    fields = dict(meta)
    fields.update(
        conventions=conventions,
        input=f"crops: float32 (batch, 1, {size}, {size}), grayscale face crop / 255",
        output=f"keypoints: float32 {shape}, x0, y0 .. x67, y67 in [-1, 1] crop coordinates"
               + ("; [:, i] in the labelling convention conventions[i]" if heads > 1 else ""),
        source_model=os.path.basename(model_path), source_sha256=digest,
        exported=time.strftime("%Y-%m-%d %H:%M:%S"),
        exporter=f"torch.onnx.export(dynamo=True), torch {torch.__version__}, opset {OPSET}")
    return {key: json.dumps(value) for key, value in fields.items()}


def export_onnx(model, meta, model_path, digest, path, conventions):
    """Write the model as ONNX (dynamic batch dimension, metadata_props) to `path`."""
    import onnx

    size = meta["input_size"]
    example = torch.zeros(2, 1, size, size)  # any values: the graph does not depend on them
    program = torch.onnx.export(model, (example,), input_names=["crops"], output_names=["keypoints"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET,
                                dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, onnx_metadata(meta, model_path, digest, conventions))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def face_detector_difference(tflite_path, onnx_path):
    """Max |difference| of the two files' outputs (score logits, regression numbers) on noise
    images of FACE_DETECTOR_SHAPES: the TFLite file on OpenCV (gray as RGB), the ONNX file on
    onnxruntime."""
    import cv2

    net, session = cv2.dnn.readNetFromTFLite(tflite_path), onnx_session(onnx_path, threads=1)
    worst = 0.0
    for i, shape in enumerate(FACE_DETECTOR_SHAPES):
        gray = np.random.default_rng(i).uniform(-1, 1, (1, 1, *shape)).astype(np.float32)
        net.setInput(np.repeat(gray, 3, axis=1))
        expected = net.forward(["classificators", "regressors"])
        got = session.run(None, {"gray": gray})
        worst = max(worst, *(float(np.abs(a - b).max()) for a, b in zip(got, expected, strict=True)))
    return worst


def face_detector_up_to_date(tflite_path=BLAZEFACE_TFLITE, onnx_path=BLAZEFACE_MODEL):
    """Whether the ONNX copy at onnx_path was exported from this TFLite file (its metadata's
    source_sha256)."""
    import onnx

    try:
        props = {p.key: p.value for p in onnx.load(onnx_path, load_external_data=False).metadata_props}
    except Exception:  # a missing file, protobuf's DecodeError, onnx's own errors: not up to date
        return False
    return props.get("source_sha256") == json.dumps(sha256(tflite_path))


def export_face_detector(tflite_path=BLAZEFACE_TFLITE, out=BLAZEFACE_MODEL):
    """Write the face detector's ONNX copy (any batch, height and width; metadata_props: its
    source's sha256) when `out` is missing or was exported from another file; returns a line
    saying what happened. A copy that differs from the TFLite file is not written (DataError)."""
    import onnx

    if face_detector_up_to_date(tflite_path, out):
        return f"{out}: up to date with {os.path.basename(tflite_path)}"
    digest = sha256(tflite_path)
    try:
        model = blazeface_from_tflite(tflite_path)
    except ModelFileError as e:
        raise DataError(str(e)) from None
    tmp = out + ".tmp"
    try:
        # Traced (TorchScript's exporter): the pads of the stride-2 convolutions become constants,
        # the same for every input whose sides are multiples of 16, as blazeface.py's are; the
        # check below runs a second shape. The tracer's warnings say so at length.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 1, 128, 128),), tmp, input_names=["gray"],
                              output_names=["scores", "boxes"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"gray": {0: "batch", 2: "height", 3: "width"}})
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {"source_model": json.dumps(os.path.basename(tflite_path)),
                                            "source_sha256": json.dumps(digest)})
        onnx.save(proto, tmp)
        difference = face_detector_difference(tflite_path, tmp)
        if not difference <= FACE_DETECTOR_TOLERANCE:
            raise DataError(f"{out} not written: onnxruntime and OpenCV's {os.path.basename(tflite_path)} "
                            f"differ by {difference:.2e}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return f"wrote {out} from {os.path.basename(tflite_path)} (max |difference| {difference:.1e})"


def labelled_faces(convention, purpose):
    """(CSV, images folder, rows or None for all) of the faces labelled in `convention` that the
    int8 copy is calibrated ("calibration") or checked ("check") on: the course training and test
    faces; the wild set's faces of other photos than its validation split's, and of those photos.
    DataError when the set is absent."""
    if convention == "course":
        split = "test" if purpose == "check" else "training"
        return data_path(f"{split}_frames_keypoints.csv"), data_path(split), None
    csv_file = wild_csv()
    if not os.path.isfile(csv_file):
        raise DataError(f"no in-the-wild set at {os.path.abspath(wild_dir())} (set FKP_WILD) for the "
                        f"{convention} head")
    held_out = in_wild_val_photos(read_keypoints_csv(csv_file).iloc[:, 0])
    rows = [i for i, val in enumerate(held_out) if val == (purpose == "check")]
    if not rows:
        raise DataError(f"{csv_file}: no faces for the {convention} head's int8 {purpose}")
    return csv_file, wild_images(), rows


def dataset_crops(csv_file, images_dir, rows, size, n, train=False, seed=0):
    """n labelled face crops of a CSV's `rows` (labelled_faces' triple; rows None: all; train=False:
    the first n, detection's crop on the labelled box; train=True: n drawn at random, augmented as
    in training): float32 (n, 1, size, size) crops and their (n, 68, 2) keypoints normalised to
    [-1, 1]. DataError without the data."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the augmentation's colour jitter
    rows = np.arange(len(read_keypoints_csv(csv_file))) if rows is None else np.asarray(rows)
    rows = rng.choice(rows, min(n, len(rows)), replace=False) if train else rows[:n]
    faces = CachedFaceDataset(csv_file, images_dir, size, train=train, indices=rows)
    samples = [faces.transform(image, points, rng=rng) for image, points in zip(faces.images, faces.keypoints,
                                                                                 strict=True)]
    return (np.stack([crop.numpy() for crop, _ in samples]).astype(np.float32),
            np.stack([np.asarray(points).reshape(-1, 2) for _, points in samples]))


def check_crops(size, n):
    """Up to n real test-set face crops (detection's crop, on the labelled box) as a float32
    (n, 1, size, size) array, their keypoints and "test-set"; random crops, no keypoints and
    "random", with a note, when the dataset is absent."""
    try:
        return (*dataset_crops(*labelled_faces("course", "check"), size, n), "test-set")
    except DataError as e:
        print(f"note: {e}; checking on {n} random crops instead of test faces")
        return np.random.default_rng(0).random((n, 1, size, size), dtype=np.float32), None, "random"


def int8_path(onnx_path):
    return os.path.splitext(onnx_path)[0] + ".int8.onnx"


def float_layers(nodes, heads=1):
    """The names of the ONNX nodes int8 leaves float: the first convolution and, for the integral
    head, its last convolution (the two-head network's last `heads`, one per head; the exporter
    writes them last), whose scores become a softmax over the map's cells (rounding them moves
    every keypoint). The regression head's fully-connected layers (Gemm) are quantized."""
    convs = [node.name for node in nodes if node.op_type == "Conv"]
    has_gemm = any(node.op_type == "Gemm" for node in nodes)
    return convs[:1] + ([] if has_gemm else convs[-heads:])


def quantize_int8(float_path, path, calibration, heads=1):
    """onnxruntime's static int8 quantization of the float model at float_path, written to path;
    activation ranges from the calibration crops ((N, 1, S, S) float32)."""
    import onnx
    from onnxruntime import quantization as q

    keep_float = float_layers(onnx.load(float_path).graph.node, heads)

    class Crops(q.CalibrationDataReader):
        def __init__(self):
            self.crops = iter(calibration)

        def get_next(self):
            crop = next(self.crops, None)
            return None if crop is None else {"crops": crop[None]}

    prepared = path + ".pre.onnx"
    try:
        q.quant_pre_process(float_path, prepared)
        q.quantize_static(prepared, path, Crops(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          # 8-bit weights: with 7 (reduce_range) the two-head network's course head
                          # read crops and their mirror images apart, and the face check dropped
                          # many test faces (docs/EXPERIMENTS.md, 2026-12-04).
                          reduce_range=False, nodes_to_exclude=keep_float,
                          # only the layers with weights: the integral head's softmax, weighted
                          # sums and normalisation lose accuracy in uint8 (docs/EXPERIMENTS.md).
                          # And ReLU6 (Clip): quantized, it folds into its convolution's output
                          # range; left float, each one is a dequantize-clip-quantize round trip
                          # between two int8 convolutions, which eats much of what int8 saves.
                          # The residual adds stay float: in uint8 they cost accuracy and save
                          # little time. Net has no Clip, so its int8 copy is as before.
                          op_types_to_quantize=["Conv", "Gemm", "Clip"],
                          calibrate_method=q.CalibrationMethod.MinMax)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def onnx_runner(path):
    """The ONNX graph at `path` on onnxruntime, one thread: a function of float32 (N, 1, S, S)
    crops that returns the graph's output as it is, every head ((N, 136) or (N, heads, 136)).
    The checks compare the graph itself, whichever head detection later reads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(crops):
        return np.concatenate([session.run(None, {name: crops[i:i + CHECK_BATCH]})[0]
                               for i in range(0, len(crops), CHECK_BATCH)])
    return run


def crop_reading(run, crops, keypoints, head=None):
    """(mean NME %, % of crops the face check drops) of one head on labelled crops (`run`:
    onnx_runner; `head`: the index of the head in a two-head output, None for a single head), as
    detection reads a crop: the mirrored crop's keypoints mapped back (x -> -x, left and right
    swapped) and averaged with the direct ones, the crop dropped when the two disagree by more than
    MAX_FLIP_DISAGREEMENT. Normalised coordinates: NME does not depend on the scale."""
    n = len(crops)
    out = run(np.concatenate([crops, crops[..., ::-1]]))
    out = (out if head is None else out[:, head]).reshape(-1, NUM_KEYPOINTS, 2)
    direct, mirrored = out[:n], mapped_back(out[n:])
    dropped = flip_disagreement(direct, mirrored) > MAX_FLIP_DISAGREEMENT
    return 100 * float(np.mean(nme_per_face((direct + mirrored) / 2, keypoints))), 100 * float(dropped.mean())


def int8_sets(conventions, size, course_check, n):
    """The int8 copy's calibration crops (CALIBRATION_CROPS augmented training crops of each
    convention) and check sets ({convention: (crops, keypoints)}; the course's is `course_check`,
    decoded by main; up to n wild validation faces are read here). DataError when a set is absent."""
    calibration = np.concatenate([dataset_crops(*labelled_faces(c, "calibration"), size, CALIBRATION_CROPS,
                                                train=True)[0] for c in conventions])
    checks = {c: course_check if c == "course" else dataset_crops(*labelled_faces(c, "check"), size, n)
              for c in conventions}
    return calibration, checks


def export_int8(float_path, out, size, conventions, course_check, n):
    """Write the int8 copy of the checked float model to `out` if every head keeps its accuracy on
    up to n check faces of its convention (the course's: `course_check`, main's); returns
    {convention: (NME float, NME int8)}, or None when a set it needs is absent."""
    try:
        calibration, checks = int8_sets(conventions, size, course_check, n)
    except DataError as e:
        print(f"note: {e}; no int8 copy written (its calibration and check need each head's labelled faces)")
        return None
    tmp = out + ".tmp"
    nmes, lost = {}, {}
    try:
        quantize_int8(float_path, tmp, calibration, heads=len(conventions))
        run_float, run_int8 = onnx_runner(float_path), onnx_runner(tmp)
        for head, convention in enumerate(conventions):
            crops, keypoints = checks[convention]
            index = head if len(conventions) > 1 else None
            (nme_float, dropped_float), (nme_int8, dropped_int8) = (
                crop_reading(run, crops, keypoints, index) for run in (run_float, run_int8))
            nmes[convention] = nme_float, nme_int8
            print(f"int8 vs float, {convention} head, on {len(crops)} {convention}-labelled check crops: "
                  f"NME {nme_int8:.3f} % against {nme_float:.3f} % (limit +{INT8_TOLERANCE}); the face "
                  f"check drops {dropped_int8:.1f} % against {dropped_float:.1f} % (limit +{INT8_DROPPED})")
            if not nme_int8 <= nme_float + INT8_TOLERANCE:
                lost[convention] = f"{nme_int8 - nme_float:.3f} NME points on the {convention} head"
            if not dropped_int8 <= dropped_float + INT8_DROPPED:
                lost[f"{convention} check"] = (f"{dropped_int8 - dropped_float:.1f} % more {convention}-head "
                                               "crops to the face check")
        if lost:
            sys.exit(f"export.py: {out} not written: int8 loses " + ", ".join(lost.values()))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, int8)")
    return nmes


def max_difference(torch_model, onnx_model, crops):
    """Largest |onnxruntime - PyTorch| over the crops, every head, run as one batch and one crop at a time."""
    reference = torch_model(crops)
    batched = np.abs(onnx_model(crops) - reference).max()
    single = max(np.abs(onnx_model(crops[i:i + 1]) - reference[i:i + 1]).max() for i in range(len(crops)))
    return float(max(batched, single))


def holds_onnx(path):
    """Whether the file at `path` is an ONNX model, which --out may replace (not a .pt, an image)."""
    try:
        import onnx
    except ImportError:
        return True  # main says what to install
    try:
        return len(onnx.load(path, load_external_data=False).graph.node) > 0
    except Exception:  # protobuf's DecodeError, onnx's own errors: not a model
        return False


def reserve_outputs(parser, args):
    """Refuse, before any work, an --out (or its int8 copy) that is the model read, the shipped
    .pt, a folder, a file of another kind or in a folder that cannot be written."""
    outputs = [args.out] + ([] if args.no_int8 else [int8_path(args.out)])
    try:
        for path in outputs:
            reserve_file_output("--out", path, holds_onnx, "an ONNX model", inputs=[args.model],
                                protected=[DEFAULT_MODEL])
    except DataError as e:
        parser.error(str(e))


def read_model(path):
    """(model, metadata, SHA-256) of the .pt file, or exit with one line naming it."""
    try:
        check_model_file(path)  # before sha256: reading a pipe would wait for ever
        digest = sha256(path)
        model, meta = load_model(path)
        check_meta(meta, path)  # the export carries the crop metadata to detection
    except OSError as e:
        sys.exit(f"export.py: {path}: {(e.strerror or str(e)).lower()}")
    except (ModelFileError, DataError) as e:
        sys.exit(f"export.py: {e}")
    if sha256(path) != digest:  # a training run replaced it while we read it
        sys.exit(f"export.py: {path} changed while being read; run export.py again")
    return model, meta, digest


def cannot_write(path, error, kept):
    """The line for a file that could not be written (full disk, read-only folder)."""
    return f"export.py: {path}: cannot write it ({error.strerror or one_line(error)}); {kept}"


def main(argv=None):
    parser = OneLineParser(description="Export the keypoint model to ONNX and check it "
                                                 "against PyTorch on onnxruntime.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="PyTorch model file (default: the shipped model)")
    parser.add_argument("--out", default=DEFAULT_ONNX_MODEL, help="ONNX file to write")
    parser.add_argument("--crops", type=int, default=64, help="test faces to compare the backends on")
    parser.add_argument("--int8-crops", type=int, default=770,
                        help="labelled faces per head to check the int8 copy on (the course head: test "
                             "faces; the 300w head: the wild validation photos' faces)")
    parser.add_argument("--no-int8", action="store_true", help="no int8 copy (<out>.int8.onnx)")
    args = parser.parse_args(argv)
    if args.crops < 1 or args.int8_crops < 1:
        parser.error("--crops and --int8-crops: compare on at least 1 face")
    reserve_outputs(parser, args)
    try:
        print(export_face_detector())
    except DataError as e:
        sys.exit(f"export.py: {e}")
    except OSError as e:
        sys.exit(cannot_write(BLAZEFACE_MODEL, e, "nothing was replaced"))
    model, meta, digest = read_model(args.model)
    conventions = output_conventions(model)
    tmp = args.out + ".tmp"
    try:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        export_onnx(model, meta, args.model, digest, tmp, conventions)
        # the test faces are decoded once, for both checks (the int8 one takes more of them)
        all_crops, keypoints, kind = check_crops(meta["input_size"],
                                                 max(args.crops, 0 if args.no_int8 else args.int8_crops))
        crops = all_crops[:args.crops]
        difference = max_difference(TorchModel(model, meta), onnx_runner(tmp), crops)
        print(f"onnxruntime vs PyTorch on {len(crops)} {kind} crops (batch {len(crops)} and batch 1): "
              f"max |difference| {difference:.2e} in normalised coordinates (limit {TOLERANCE:.0e})")
        if not difference <= TOLERANCE:
            sys.exit(f"export.py: {args.out} not written: onnxruntime and PyTorch differ by "
                     f"{difference:.2e}")
        os.replace(tmp, args.out)
    except DataError as e:
        sys.exit(f"export.py: {e}")
    except ImportError as e:  # onnx, onnxscript (torch's exporter) or onnxruntime
        sys.exit(f"export.py: {e.name} is not installed: pip install -r requirements.txt")
    except OSError as e:
        sys.exit(cannot_write(args.out, e, "nothing was replaced"))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB, opset {OPSET}, any batch size, "
          f"conventions {', '.join(conventions)}) from {args.model}")
    if not args.no_int8 and keypoints is None:
        print("note: no int8 copy written (its calibration and check need the dataset)")
    elif not args.no_int8:
        try:
            export_int8(args.out, int8_path(args.out), meta["input_size"], conventions,
                        (all_crops[:args.int8_crops], keypoints[:args.int8_crops]), args.int8_crops)
        except DataError as e:
            sys.exit(f"export.py: {e}")
        except OSError as e:
            sys.exit(cannot_write(int8_path(args.out), e, f"{args.out} was written, the int8 copy was not"))
    return difference


if __name__ == "__main__":
    main()
