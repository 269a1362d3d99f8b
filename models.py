"""The facial keypoint CNNs.

`Net` is the shipped network; `NaimishNet` is the course-style baseline it is compared with in
Notebook 2. Both take a square grayscale face crop in [0, 1] and return 136 numbers: the 68 (x, y)
keypoints in crop coordinates normalised to [-1, 1]. `build_model(arch, input_size)` picks one by
name, and `save_model` / `load_model` store a network with the metadata needed to use it.

`Net` has two output heads. "regression" (fully-connected layers that output the 136 numbers) is
the course's way, and Net's default, which older model files have. "integral", what train.py
gives it, is a 1x1 convolution on the last 7 x 7 feature map that scores, for every keypoint,
each cell of a 7 x 7 grid over the crop and predicts where in that cell the keypoint lies (as in
Pixel-in-Pixel Net, Jin et al., 2021); the keypoint is the softmax-weighted mean of the cells'
positions (integral regression, Sun et al., 2018), the same 136 numbers as the other head's.
"""

import copy
import os

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from facial_keypoints.face_crop import CROP_META, NUM_KEYPOINTS
from facial_keypoints.media import one_line

NUM_OUTPUTS = 2 * NUM_KEYPOINTS  # 68 keypoints x (x, y)
HEADS = ("regression", "integral")


def conv_bn_relu(in_channels, out_channels, stride=1):
    """3x3 convolution, batch norm, ReLU: the unit every stage is built from."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


def integral_keypoints(maps, input_size):
    """The integral head's keypoints from its (N, 3 * 68, G, G) maps (per keypoint: the cells'
    scores, x offsets, y offsets, the offsets in cell units): each cell's position (its corner
    plus its offsets) weighted by the softmax of the scores over the cells, so the output moves
    smoothly with the maps and a coordinate loss trains them. Returns (N, 136) in the regression
    head's units: crop pixels normalised by (p - (size - 1) / 2) / ((size - 1) / 2)."""
    n, _, grid, _ = maps.shape
    scores, dx, dy = maps.view(n, 3, NUM_KEYPOINTS, grid * grid).unbind(1)
    weights = scores.softmax(dim=2)
    cells = torch.arange(grid * grid, device=maps.device)
    cell = input_size / grid
    x = (weights * ((cells % grid).float() + dx)).sum(dim=2) * cell
    y = (weights * (torch.div(cells, grid, rounding_mode="floor").float() + dy)).sum(dim=2) * cell
    half = (input_size - 1) / 2
    return ((torch.stack([x, y], dim=2) - half) / half).flatten(1)


class Net(nn.Module):
    """A small VGG-style CNN for 112 x 112 grayscale face crops, built for one CPU thread.

    Design choices, briefly:
    - The input is a tight crop around the detected face, not the whole image, so 112 px is enough
      resolution (the outer-eye-corner distance is ~46 px in the crop) and the first layers stay cheap.
    - Two stride-2 convolutions take the input from 112 to 28 px before any wide layer, so the
      compute is spent at 28 x 28 and below: that is what keeps the forward pass inside the budget
      of a couple of milliseconds per face on one CPU thread (`python bench.py`, BENCHMARKS.md).
    - Batch norm after every convolution lets a high learning rate train it in minutes.
    - Max-pooling halves the resolution between stages; the final 3 x 3 map is flattened (not
      globally averaged) because where a feature is matters for regressing coordinates.
    - Two fully-connected layers map the features to the 136 outputs. Dropout sits between them
      but defaults to 0: this network underfits the augmented data (training and validation NME
      are equal), and dropout only slowed its training down (Notebook 2 compares the two), so
      capacity is better spent than thrown away.

    With head="integral" the last max-pool and the fully-connected layers give way to one 1x1
    convolution on the 7 x 7 map, read by integral_keypoints (see the module docstring).
    """

    def __init__(self, input_size=112, widths=(16, 32, 48, 96, 192), hidden=384, dropout=0.0,
                 head="regression"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
        w0, w1, w2, w3, w4 = widths
        self.head_type, self.input_size = head, input_size
        self.features = nn.Sequential(
            *conv_bn_relu(1, w0, stride=2), *conv_bn_relu(w0, w1, stride=2),          # 112 -> 28
            *conv_bn_relu(w1, w2), *conv_bn_relu(w2, w2), nn.MaxPool2d(2),            # 28 -> 14
            *conv_bn_relu(w2, w3), *conv_bn_relu(w3, w3), nn.MaxPool2d(2),            # 14 -> 7
            *conv_bn_relu(w3, w4),
            *([nn.MaxPool2d(2)] if head == "regression" else []),                    # 7 -> 3
        )
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, 1, input_size, input_size)).numel()
        if head == "regression":
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(n_features, hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout), nn.Linear(hidden, NUM_OUTPUTS),
            )
        else:  # per keypoint: a score for each cell, then its x and y offset inside the cell
            self.head = nn.Conv2d(w4, 3 * NUM_KEYPOINTS, kernel_size=1)

    def forward(self, x):
        out = self.head(self.features(x))
        return integral_keypoints(out, self.input_size) if self.head_type == "integral" else out


class NaimishNet(nn.Module):
    """The course recipe: four conv + max-pool + dropout stages (no batch norm), then three
    fully-connected layers (Agarwal et al., "Facial Key Points Detection using Deep Convolutional
    Neural Network - NaimishNet", 2017). Most of its parameters sit in the first fully-connected
    layer, which sees the whole last feature map: tens of millions at 224 px (Notebook 2 counts them)."""

    def __init__(self, input_size=224):
        super().__init__()
        layers, channels = [], 1
        for i, (out, kernel) in enumerate([(32, 4), (64, 3), (128, 2), (256, 1)]):
            layers += [nn.Conv2d(channels, out, kernel), nn.ELU(), nn.MaxPool2d(2), nn.Dropout(0.1 * (i + 1))]
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, 1, input_size, input_size)).numel()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(n_features, 1000), nn.ELU(), nn.Dropout(0.5),
            nn.Linear(1000, 1000), nn.ReLU(), nn.Dropout(0.6), nn.Linear(1000, NUM_OUTPUTS),
        )

    def forward(self, x):
        return self.head(self.features(x))


ARCHITECTURES = {"net": Net, "naimishnet": NaimishNet}


# What using a saved model needs to know besides its weights: the network, and the face crop it
# was trained on (detection cuts the same crop around each detected face).
REQUIRED_META = ("arch", *CROP_META)


def build_model(arch="net", input_size=112, **options):
    """A network by name; `options` go to its constructor (e.g. dropout=0.2 for Net). Options the
    network cannot be built with (too small an input, a width of 0, an unknown option) are a
    ValueError with a one-line message."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    try:
        return ARCHITECTURES[arch](input_size=input_size, **options)
    except (TypeError, ValueError, RuntimeError) as e:  # e.g. the feature map shrinks to nothing
        raise ValueError(f"cannot build {arch} for {input_size} px input with {options or 'defaults'} "
                         f"({one_line(e)})") from None


def all_finite(model):
    """Whether every weight and batch-norm statistic is a finite number (a diverged run's are not)."""
    return all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point())


class ModelFileError(Exception):
    """A model file that is missing, unreadable, incomplete or does not fit the architecture."""


def save_model(model, path, meta):
    """Save weights and metadata (arch, input_size, crop, metrics...) atomically: write, then rename."""
    atomic_save({"state_dict": model.state_dict(), "meta": meta}, path)


def atomic_save(obj, path):
    """torch.save to a temporary file beside `path`, then rename it over `path`: an interrupted or
    failed save leaves the previous file as it was (and no temporary file)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:  # also Ctrl-C in the middle of writing
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_model(path, device="cpu"):
    """Load a model saved by `save_model`; returns (model in eval mode, meta)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle, zip and version errors all mean "not our model file"
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__})") from None
    if not isinstance(saved, dict) or "state_dict" not in saved or not isinstance(saved.get("meta"), dict):
        raise ModelFileError(f"{path}: not a facial-keypoints model (no state_dict/meta)")
    meta = saved["meta"]
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: its metadata lacks {', '.join(missing)}, which detection needs "
                             f"(train.py writes it); use a model that train.py saved")
    try:
        model = build_model(meta["arch"], meta["input_size"], **meta.get("model_options", {}))
        model.load_state_dict(saved["state_dict"])
    except (ValueError, RuntimeError, TypeError) as e:
        raise ModelFileError(f"{path}: does not match the architecture ({one_line(e)})") from None
    if not all_finite(model):
        raise ModelFileError(f"{path}: has non-finite weights (a diverged training run?); "
                             f"use another model or train again")
    return model.to(device).eval(), meta


def inference_copy(model):
    """A copy of a network for prediction only: eval mode, every convolution merged with the batch
    norm right after it (fuse_conv_bn_eval: the same function with one layer fewer) and
    channels_last memory, which is faster on a CPU (docs/EXPERIMENTS.md, a faster PyTorch
    backend); feed it channels_last input. The original network is left as it is."""
    model = copy.deepcopy(model).eval()
    for block in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(block) - 1):
            if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                block[i], block[i + 1] = fuse_conv_bn_eval(block[i], block[i + 1]), nn.Identity()
    return model.to(memory_format=torch.channels_last)
