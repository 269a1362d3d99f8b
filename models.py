"""The facial keypoint CNNs.

`Net` is the shipped network; `NaimishNet` is the course-style baseline it is compared with in
Notebook 2. Both take a square grayscale face crop in [0, 1] and return 136 numbers: the 68 (x, y)
keypoints in crop coordinates normalised to [-1, 1]. `build_model(arch, input_size)` picks one by
name, and `save_model` / `load_model` store a network with the metadata needed to use it.
"""

import copy
import os

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

NUM_OUTPUTS = 136  # 68 keypoints x (x, y)


def conv_bn_relu(in_channels, out_channels, stride=1):
    """3x3 convolution, batch norm, ReLU: the unit every stage is built from."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class Net(nn.Module):
    """A small VGG-style CNN for 112 x 112 grayscale face crops, built for one CPU thread.

    Design choices, briefly:
    - The input is a tight crop around the detected face, not the whole image, so 112 px is enough
      resolution (the outer-eye-corner distance is ~46 px in the crop) and the first layers stay cheap.
    - Two stride-2 convolutions take the input from 112 to 28 px before any wide layer, so the
      compute is spent at 28 x 28 and below; this keeps the forward pass near 2 ms on one thread
      (1.6 ms measured on one day, 2.3-2.9 ms on a slower day of the same machine; `python bench.py`).
    - Batch norm after every convolution lets a high learning rate train it in minutes.
    - Max-pooling halves the resolution between stages; the final 3 x 3 map is flattened (not
      globally averaged) because where a feature is matters for regressing coordinates.
    - Two fully-connected layers map the features to the 136 outputs. Dropout sits between them
      but defaults to 0: this network underfits the augmented data (training and validation
      NME are equal), and dropout 0.2 slowed training down (validation NME 9.4 % vs 7.1 % after
      12 epochs, Notebook 2), so capacity is better spent than thrown away.
    """

    def __init__(self, input_size=112, widths=(16, 32, 48, 96, 192), hidden=384, dropout=0.0):
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.features = nn.Sequential(
            *conv_bn_relu(1, w0, stride=2), *conv_bn_relu(w0, w1, stride=2),          # 112 -> 28
            *conv_bn_relu(w1, w2), *conv_bn_relu(w2, w2), nn.MaxPool2d(2),            # 28 -> 14
            *conv_bn_relu(w2, w3), *conv_bn_relu(w3, w3), nn.MaxPool2d(2),            # 14 -> 7
            *conv_bn_relu(w3, w4), nn.MaxPool2d(2),                                   # 7 -> 3
        )
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, 1, input_size, input_size)).numel()
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(n_features, hidden), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(hidden, NUM_OUTPUTS),
        )

    def forward(self, x):
        return self.head(self.features(x))


class NaimishNet(nn.Module):
    """The course recipe: four conv + max-pool + dropout stages (no batch norm), then three
    fully-connected layers (Agarwal et al., "Facial Key Points Detection using Deep Convolutional
    Neural Network - NaimishNet", 2017). At 224 px it has 37M parameters, mostly in the first FC."""

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


def build_model(arch="net", input_size=112, **options):
    """A network by name; `options` go to its constructor (e.g. dropout=0.2 for Net)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch](input_size=input_size, **options)


class ModelFileError(Exception):
    """A model file that is missing, unreadable or does not fit the architecture."""


def save_model(model, path, meta):
    """Save weights and metadata (arch, input_size, crop, metrics...) atomically: write, then rename."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"state_dict": model.state_dict(), "meta": meta}, tmp)
    os.replace(tmp, path)


def load_model(path, device="cpu"):
    """Load a model saved by `save_model`; returns (model in eval mode, meta)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: no such model file")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle, zip and version errors all mean "not our model file"
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__})") from None
    if not isinstance(saved, dict) or "state_dict" not in saved or "meta" not in saved:
        raise ModelFileError(f"{path}: not a facial-keypoints model (no state_dict/meta)")
    meta = saved["meta"]
    try:
        model = build_model(meta["arch"], meta["input_size"], **meta.get("model_options", {}))
        model.load_state_dict(saved["state_dict"])
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelFileError(f"{path}: does not match the architecture ({first})") from None
    return model.to(device).eval(), meta


def inference_copy(model):
    """A copy of a network for prediction only: eval mode, every convolution merged with the batch
    norm right after it (fuse_conv_bn_eval: the same function with one layer fewer) and
    channels_last memory. On one CPU thread at batch 1 it runs `Net` about 30 % faster; feed it
    channels_last input. The original network is left as it is."""
    model = copy.deepcopy(model).eval()
    for block in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(block) - 1):
            if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                block[i], block[i + 1] = fuse_conv_bn_eval(block[i], block[i + 1]), nn.Identity()
    return model.to(memory_format=torch.channels_last)
