"""Net's layers and output heads: the course's layer names, the integral head reading keypoints
off its maps, and model files saved with the older layer names still loading."""

import pytest
import torch

from models import (
    HEADS,
    NUM_KEYPOINTS,
    OLD_HEAD_LAYERS,
    OLD_NET_LAYERS,
    Net,
    build_model,
    inference_copy,
    integral_keypoints,
    load_model,
)

SIZE, GRID = 112, 7
HALF = (SIZE - 1) / 2


def maps_for(index, dx, dy, score=5.0):
    """Integral-head maps in which, for every keypoint, cell `index` (row * 7 + col) scores `score`
    and the others 0, with the offsets (dx, dy) there and misleading offsets everywhere else."""
    maps = torch.zeros(1, 3, NUM_KEYPOINTS, GRID * GRID)
    maps[:, 1:] = 0.9                                  # offsets in the cells that do not win
    maps[:, 0, :, index] = score
    maps[:, 1, :, index], maps[:, 2, :, index] = dx, dy
    return maps.view(1, 3 * NUM_KEYPOINTS, GRID, GRID)


def test_integral_keypoints_known_answers():
    # One cell far above the others (scores 50 and 0: softmax weight ~1 - 48e-22) is that cell's
    # position: row 2, column 3, a quarter across and half down it. Each cell is 112 / 7 = 16 crop
    # pixels, so the point is at x = 3.25 * 16 = 52, y = 2.5 * 16 = 40.
    points = integral_keypoints(maps_for(2 * GRID + 3, 0.25, 0.5, score=50.0), SIZE).view(NUM_KEYPOINTS, 2)
    expected = torch.tensor([(52 - HALF) / HALF, (40 - HALF) / HALF])
    assert torch.allclose(points, expected.expand(NUM_KEYPOINTS, 2), atol=1e-6)
    # Equal scores and no offsets: the mean of the cells' corners, (0 + 1 + ... + 6) / 7 = 3 cells
    # = 48 px along both axes.
    flat = torch.zeros(1, 3 * NUM_KEYPOINTS, GRID, GRID)
    assert torch.allclose(integral_keypoints(flat, SIZE), torch.full((1, 136), (48 - HALF) / HALF))


def test_integral_net_returns_keypoints_in_training_too():
    model = build_model("net", SIZE, head="integral").train()
    crops = torch.rand(2, 1, SIZE, SIZE)
    out = model(crops)
    assert out.shape == (2, 2 * NUM_KEYPOINTS)
    out.sum().backward()                                # a coordinate loss reaches the scores
    assert model.keypoint_maps.weight.grad.abs().sum() > 0


def test_integral_net_fused_for_inference_predicts_the_same():
    torch.manual_seed(0)
    model = build_model("net", SIZE, head="integral").train()
    for _ in range(3):  # batch-norm running statistics away from their initial values
        model(torch.rand(4, 1, SIZE, SIZE) * 3)
    crops = torch.rand(2, 1, SIZE, SIZE)
    keypoints = model.eval()(crops)
    fused = inference_copy(model)(crops.contiguous(memory_format=torch.channels_last))
    assert keypoints.shape == (2, 2 * NUM_KEYPOINTS) and torch.allclose(fused, keypoints, atol=1e-4)


def test_net_has_the_course_layer_names_and_the_integral_head_by_default():
    keys = set(Net().state_dict())
    assert {"conv1.weight", "bn1.running_mean", "conv7.weight", "bn7.weight", "keypoint_maps.weight"} <= keys
    assert not any(key.startswith(("features.", "head.", "fc")) for key in keys)
    assert {"fc1.weight", "fc2.weight"} <= set(Net(head="regression").state_dict())
    for head in HEADS:
        assert Net(head=head).eval()(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 2 * NUM_KEYPOINTS)


@pytest.mark.parametrize("head", HEADS)
def test_model_files_with_the_old_layer_names_still_load(tmp_path, head):
    # Before the course's names, Net was one nn.Sequential `features` and a `head`; files saved
    # then (the regression ones without a head in their options) load with the same outputs.
    torch.manual_seed(0)
    model = Net(head=head).eval()
    old_names = {new: old for old, new in {**OLD_NET_LAYERS, **OLD_HEAD_LAYERS[head]}.items()}
    old_state = {}
    for key, value in model.state_dict().items():
        layer, _, tensor = key.rpartition(".")
        old_state[f"{old_names[layer]}.{tensor}"] = value
    assert any(key.startswith("features.20.") for key in old_state)
    options = {"head": head} if head == "integral" else {}
    meta = dict(arch="net", input_size=SIZE, crop_margin=1.2, crop_shift=0.157, model_options=options)
    torch.save({"state_dict": old_state, "meta": meta}, tmp_path / "old.pt")
    loaded, _ = load_model(str(tmp_path / "old.pt"))
    crops = torch.rand(2, 1, SIZE, SIZE)
    assert loaded.head_type == head and torch.equal(loaded(crops), model(crops))


def test_too_small_an_input_is_a_one_line_error():
    with pytest.raises(ValueError, match="leaves no feature map"):
        build_model("net", 8)
    assert build_model("net", 16).eval()(torch.zeros(1, 1, 16, 16)).shape == (1, 2 * NUM_KEYPOINTS)


def test_unknown_head_is_a_one_line_error():
    for head in ("soft-argmax", "heatmap"):  # heatmap: an experiment that was not kept
        with pytest.raises(ValueError, match="unknown head"):
            build_model("net", SIZE, head=head)
