"""Export the keypoint model to ONNX, for onnxruntime and anything else that runs ONNX.

    python export.py             # the shipped facial_keypoints/saved_models/keypoints_model.pt ->
                                 #   keypoints_model.onnx and its int8 copy keypoints_model.int8.onnx
    python export.py --model saved_models/trained_model.pt --out /tmp/trained_model.onnx --no-int8

The ONNX model takes what the PyTorch model takes, float32 face crops `crops` of shape
(batch, 1, S, S) with values gray / 255, for any batch size, and returns `keypoints` (batch, 136):
x0, y0 .. x67, y67 normalised to [-1, 1] in crop coordinates. The model's metadata (input_size,
crop_margin, crop_shift, pixel scale, keypoint normalisation, arch, training command...) and
where it came from are stored in the file's metadata_props, one key per field, each value JSON,
so `detect.py --backend onnx` needs nothing but the .onnx file.

The file is written next to --out first and checked before it replaces --out: onnxruntime and
PyTorch predict the same test crops (data_load's test split, detection's crop), at batch 1 and
batch N, within 1e-4 in normalised coordinates; otherwise nothing is replaced and the exit
status is 1. Exporter: torch.onnx.export with dynamo=True (PyTorch's default, needs onnxscript).

The int8 copy (<out>.int8.onnx, what detect.py's "auto" backend runs) is onnxruntime's static
quantization of the checked float model: weights int8 per channel, activations uint8 with ranges
calibrated on CALIBRATION_CROPS augmented training crops. The first convolution (one gray input
channel) and a map head's 1x1 convolution stay float (float_layers): quantizing them costs
accuracy, and little time is spent there. Only layers with weights (Conv, Gemm) are quantized: the
integral head's softmax and weighted sums stay float. It replaces the old
copy only if its NME on the check crops is within INT8_TOLERANCE points of the float model's (the
calibration needs the dataset; without it no int8 copy is written).
"""

import json
import os
import sys
import time

import numpy as np
import torch

from data_load import CachedFaceDataset
from facial_keypoints.backends import (
    DEFAULT_MODEL,
    DEFAULT_ONNX_MODEL,
    OnnxModel,
    TorchModel,
    check_meta,
    check_model_file,
    predict_normalized,
    sha256,
)
from facial_keypoints.media import (
    DataError,
    OneLineParser,
    data_path,
    one_line,
    read_keypoints_csv,
    reserve_file_output,
)
from metrics import nme_per_face
from models import ModelFileError, load_model

OPSET = 18         # the oldest opset PyTorch's exporter implements natively; onnxruntime >= 1.14 runs it
TOLERANCE = 1e-4   # max |onnxruntime - PyTorch|, normalised coordinates (1e-4 * 56 px ~ 0.006 px)
INT8_TOLERANCE = 0.05   # NME points the int8 copy may lose against the float model on the check crops
CALIBRATION_CROPS = 300


def onnx_metadata(meta, model_path, digest):
    """The .pt metadata plus the export's own, as metadata_props: one key per field, JSON values."""
    size = meta["input_size"]
    fields = dict(meta)
    fields.update(
        input=f"crops: float32 (batch, 1, {size}, {size}), grayscale face crop / 255",
        output="keypoints: float32 (batch, 136), x0, y0 .. x67, y67 in [-1, 1] crop coordinates",
        source_model=os.path.basename(model_path), source_sha256=digest,
        exported=time.strftime("%Y-%m-%d %H:%M:%S"),
        exporter=f"torch.onnx.export(dynamo=True), torch {torch.__version__}, opset {OPSET}")
    return {key: json.dumps(value) for key, value in fields.items()}


def export_onnx(model, meta, model_path, digest, path):
    """Write the model as ONNX (dynamic batch dimension, metadata_props) to `path`."""
    import onnx

    size = meta["input_size"]
    example = torch.zeros(2, 1, size, size)  # any values: the graph does not depend on them
    program = torch.onnx.export(model, (example,), input_names=["crops"], output_names=["keypoints"],
                                dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET,
                                dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, onnx_metadata(meta, model_path, digest))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)


def dataset_crops(split, size, n, train=False, seed=0):
    """n labelled face crops of a split ("test": the first n, detection's crop on the labelled
    box; "training" with train=True: n drawn at random, augmented as in training): float32
    (n, 1, size, size) crops and their (n, 68, 2) keypoints normalised to [-1, 1]. DataError
    without the dataset."""
    csv_file = data_path(f"{split}_frames_keypoints.csv")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the augmentation's colour jitter
    count = len(read_keypoints_csv(csv_file))
    rows = rng.choice(count, min(n, count), replace=False) if train else range(min(n, count))
    faces = CachedFaceDataset(csv_file, data_path(split), size, train=train, indices=rows)
    samples = [faces.transform(image, points, rng=rng) for image, points in zip(faces.images, faces.keypoints,
                                                                                 strict=True)]
    return (np.stack([crop.numpy() for crop, _ in samples]).astype(np.float32),
            np.stack([np.asarray(points).reshape(-1, 2) for _, points in samples]))


def check_crops(size, n):
    """Up to n real test-set face crops (detection's crop, on the labelled box) as a float32
    (n, 1, size, size) array, their keypoints and "test-set"; random crops, no keypoints and
    "random", with a note, when the dataset is absent."""
    try:
        return (*dataset_crops("test", size, n), "test-set")
    except DataError as e:
        print(f"note: {e}; checking on {n} random crops instead of test faces")
        return np.random.default_rng(0).random((n, 1, size, size), dtype=np.float32), None, "random"


def int8_path(onnx_path):
    return os.path.splitext(onnx_path)[0] + ".int8.onnx"


def float_layers(nodes):
    """The names of the ONNX nodes int8 leaves float: the first convolution and, for the integral
    head, its last convolution, whose scores become a softmax over the map's cells (rounding them
    moves every keypoint). The regression head's fully-connected layers (Gemm) are quantized."""
    convs = [node.name for node in nodes if node.op_type == "Conv"]
    has_gemm = any(node.op_type == "Gemm" for node in nodes)
    return convs[:1] + ([] if has_gemm else convs[-1:])


def quantize_int8(float_path, path, calibration):
    """onnxruntime's static int8 quantization of the float model at float_path, written to path;
    activation ranges from the calibration crops ((N, 1, S, S) float32)."""
    import onnx
    from onnxruntime import quantization as q

    keep_float = float_layers(onnx.load(float_path).graph.node)

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
                          reduce_range=True, nodes_to_exclude=keep_float,
                          # only the layers with weights: the integral head's softmax, weighted
                          # sums and normalisation lose accuracy in uint8 (docs/EXPERIMENTS.md)
                          op_types_to_quantize=["Conv", "Gemm"],
                          calibrate_method=q.CalibrationMethod.MinMax)
    finally:
        if os.path.exists(prepared):
            os.remove(prepared)


def crop_nme(model, crops, keypoints):
    """Mean NME (%) of a backend's flip-averaged predictions on labelled crops (normalised
    coordinates: NME does not depend on the scale)."""
    pred = predict_normalized(model, crops, flip_average=True)
    return 100 * float(np.mean(nme_per_face(pred, keypoints)))


def export_int8(float_path, out, size, check, keypoints):
    """Write the int8 copy of the checked float model to `out` if it keeps its accuracy; returns
    the NMEs (float, int8) or None when the dataset is absent."""
    try:
        calibration, _ = dataset_crops("training", size, CALIBRATION_CROPS, train=True)
    except DataError as e:
        print(f"note: {e}; no int8 copy written (its calibration needs training faces)")
        return None
    tmp = out + ".tmp"
    try:
        quantize_int8(float_path, tmp, calibration)
        nme_float = crop_nme(OnnxModel(float_path, threads=1), check, keypoints)
        nme_int8 = crop_nme(OnnxModel(tmp, threads=1), check, keypoints)
        print(f"int8 vs float on {len(check)} test-set crops: NME {nme_int8:.3f} % against "
              f"{nme_float:.3f} % (limit +{INT8_TOLERANCE})")
        if not nme_int8 <= nme_float + INT8_TOLERANCE:
            sys.exit(f"export.py: {out} not written: int8 loses {nme_int8 - nme_float:.3f} NME points")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {out} ({os.path.getsize(out) / 1e6:.1f} MB, int8)")
    return nme_float, nme_int8


def max_difference(torch_model, onnx_model, crops):
    """Largest |onnxruntime - PyTorch| over the crops, run as one batch and one crop at a time."""
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
    parser.add_argument("--int8-crops", type=int, default=770, help="test faces to check the int8 copy on")
    parser.add_argument("--no-int8", action="store_true", help="no int8 copy (<out>.int8.onnx)")
    args = parser.parse_args(argv)
    if args.crops < 1 or args.int8_crops < 1:
        parser.error("--crops and --int8-crops: compare on at least 1 face")
    reserve_outputs(parser, args)
    model, meta, digest = read_model(args.model)
    tmp = args.out + ".tmp"
    try:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        export_onnx(model, meta, args.model, digest, tmp)
        # the test faces are decoded once, for both checks (the int8 one takes more of them)
        all_crops, keypoints, kind = check_crops(meta["input_size"],
                                                 max(args.crops, 0 if args.no_int8 else args.int8_crops))
        crops = all_crops[:args.crops]
        difference = max_difference(TorchModel(model, meta), OnnxModel(tmp, threads=1), crops)
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
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB, opset {OPSET}, any batch size) "
          f"from {args.model}")
    if not args.no_int8 and keypoints is None:
        print("note: no int8 copy written (its calibration and check need the dataset)")
    elif not args.no_int8:
        try:
            export_int8(args.out, int8_path(args.out), meta["input_size"], all_crops[:args.int8_crops],
                        keypoints[:args.int8_crops])
        except DataError as e:
            sys.exit(f"export.py: {e}")
        except OSError as e:
            sys.exit(cannot_write(int8_path(args.out), e, f"{args.out} was written, the int8 copy was not"))
    return difference


if __name__ == "__main__":
    main()
