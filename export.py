"""Export the keypoint model to ONNX, for onnxruntime and anything else that runs ONNX.

    python export.py             # saved_models/keypoints_model.pt -> saved_models/keypoints_model.onnx
    python export.py --model saved_models/trained_model.pt --out /tmp/trained_model.onnx

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
"""

import hashlib
import json
import os
import sys
import time

import cv2
import numpy as np
import torch

from backends import DEFAULT_MODEL, DEFAULT_ONNX_MODEL, OnnxModel, TorchModel
from data_load import FaceCropAugment
from media import DataError, OneLineParser, data_path, load_image, read_keypoints_csv
from models import ModelFileError, load_model

OPSET = 18         # the oldest opset PyTorch's exporter implements natively; onnxruntime >= 1.14 runs it
TOLERANCE = 1e-4   # max |onnxruntime - PyTorch|, normalised coordinates (1e-4 * 56 px ~ 0.006 px)


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


def check_crops(size, n):
    """Up to n real test-set face crops (detection's crop, on the labelled box) as a float32
    (n, 1, size, size) array; random crops, with a note, when the dataset is absent."""
    csv_file = data_path("test_frames_keypoints.csv")
    try:
        frame = read_keypoints_csv(csv_file)
    except DataError as e:
        print(f"note: {e}; checking on {n} random crops instead of test faces")
        return np.random.default_rng(0).random((n, 1, size, size), dtype=np.float32), "random"
    crop = FaceCropAugment(size, train=False)
    crops = []
    for name, values in zip(frame.iloc[:n, 0], frame.iloc[:n, 1:].to_numpy(float), strict=True):
        gray = cv2.cvtColor(load_image(data_path("test", name)), cv2.COLOR_RGB2GRAY)
        crops.append(crop(gray, values.reshape(-1, 2))[0].numpy())
    return np.stack(crops), "test-set"


def max_difference(torch_model, onnx_model, crops):
    """Largest |onnxruntime - PyTorch| over the crops, run as one batch and one crop at a time."""
    reference = torch_model(crops)
    batched = np.abs(onnx_model(crops) - reference).max()
    single = max(np.abs(onnx_model(crops[i:i + 1]) - reference[i:i + 1]).max() for i in range(len(crops)))
    return float(max(batched, single))


def main(argv=None):
    parser = OneLineParser(description="Export the keypoint model to ONNX and check it "
                                                 "against PyTorch on onnxruntime.")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="PyTorch model file (default: the shipped model)")
    parser.add_argument("--out", default=DEFAULT_ONNX_MODEL, help="ONNX file to write")
    parser.add_argument("--crops", type=int, default=64, help="test faces to compare the backends on")
    args = parser.parse_args(argv)
    if args.crops < 1:
        parser.error(f"--crops {args.crops}: compare on at least 1 face")
    if os.path.realpath(args.out) == os.path.realpath(args.model):
        parser.error(f"--out {args.out} is the PyTorch model itself; give the ONNX file another name")
    if os.path.isdir(args.out):
        parser.error(f"--out {args.out}: is a folder; give a file name")
    try:
        digest = sha256(args.model)
        model, meta = load_model(args.model)
    except OSError as e:
        sys.exit(f"export.py: {args.model}: {(e.strerror or str(e)).lower()}")
    except ModelFileError as e:
        sys.exit(f"export.py: {e}")
    if sha256(args.model) != digest:  # a training run replaced it while we read it
        sys.exit(f"export.py: {args.model} changed while being read; run export.py again")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    tmp = args.out + ".tmp"
    try:
        export_onnx(model, meta, args.model, digest, tmp)
        crops, kind = check_crops(meta["input_size"], args.crops)
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
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB, opset {OPSET}, any batch size) "
          f"from {args.model}")
    return difference


if __name__ == "__main__":
    main()
