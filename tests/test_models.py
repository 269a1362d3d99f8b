"""The networks' output heads: the integral head reads keypoints off its maps; the course's
fully-connected head keeps its layers, so older model files still load."""

import pytest
import torch

from models import NUM_KEYPOINTS, Net, build_model, inference_copy, integral_keypoints

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
    assert model.head.weight.grad.abs().sum() > 0


def test_integral_net_fused_for_inference_predicts_the_same():
    torch.manual_seed(0)
    model = build_model("net", SIZE, head="integral").train()
    for _ in range(3):  # batch-norm running statistics away from their initial values
        model(torch.rand(4, 1, SIZE, SIZE) * 3)
    crops = torch.rand(2, 1, SIZE, SIZE)
    keypoints = model.eval()(crops)
    fused = inference_copy(model)(crops.contiguous(memory_format=torch.channels_last))
    assert keypoints.shape == (2, 2 * NUM_KEYPOINTS) and torch.allclose(fused, keypoints, atol=1e-4)


def test_regression_net_keeps_its_layers():
    # Older model files' state_dict keys: Net's default head is the course's fully-connected one.
    keys = set(Net().state_dict())
    assert {"head.1.weight", "head.4.weight", "features.21.weight"} <= keys
    assert Net().eval()(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 2 * NUM_KEYPOINTS)


def test_unknown_head_is_a_one_line_error():
    for head in ("soft-argmax", "heatmap"):  # heatmap: an experiment that was not kept
        with pytest.raises(ValueError, match="unknown head"):
            build_model("net", SIZE, head=head)
