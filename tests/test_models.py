"""The networks' output heads: the heatmap head decodes to the regression head's coordinates."""

import pytest
import torch

from models import (
    NUM_KEYPOINTS,
    Net,
    build_model,
    decode_heatmaps,
    heatmap_targets,
    inference_copy,
    integral_keypoints,
)

SIZE, GRID = 112, 7
HALF = (SIZE - 1) / 2


def maps_for(index, dx, dy, batch=1):
    """Heatmap-head maps whose best cell for every keypoint is `index` (row * 7 + col), with the
    offsets (dx, dy) there and misleading offsets everywhere else."""
    maps = torch.zeros(batch, 3, NUM_KEYPOINTS, GRID * GRID)
    maps[:, 1:] = 0.9                                  # offsets in the cells that do not win
    maps[:, 0, :, index] = 5.0
    maps[:, 1, :, index], maps[:, 2, :, index] = dx, dy
    return maps.view(batch, 3 * NUM_KEYPOINTS, GRID, GRID)


def test_decode_heatmaps_known_answer():
    # Cell row 2, column 3 of the 7 x 7 grid, a quarter across and half down it: each cell is
    # 112 / 7 = 16 crop pixels, so the point is at x = 3.25 * 16 = 52, y = 2.5 * 16 = 40.
    points = decode_heatmaps(maps_for(2 * GRID + 3, 0.25, 0.5), SIZE).view(-1, NUM_KEYPOINTS, 2)
    expected = torch.tensor([(52 - HALF) / HALF, (40 - HALF) / HALF])
    assert torch.allclose(points[0], expected.expand(NUM_KEYPOINTS, 2), atol=1e-6)


def test_decode_picks_the_best_cell_per_keypoint():
    maps = maps_for(0, 0.0, 0.0).view(1, 3, NUM_KEYPOINTS, GRID * GRID)
    maps[0, 0, 7, 48] = 9.0                             # keypoint 7: the bottom-right cell wins
    maps[0, 1, 7, 48], maps[0, 2, 7, 48] = 0.5, 0.5
    points = decode_heatmaps(maps.reshape(1, -1, GRID, GRID), SIZE).view(NUM_KEYPOINTS, 2)
    assert torch.allclose(points[7], torch.full((2,), (6.5 * 16 - HALF) / HALF))
    assert torch.allclose(points[0], torch.full((2,), -1.0))


def test_integral_keypoints_known_answers():
    # One cell far above the others: the integral is that cell's position, as decode_heatmaps says.
    maps = maps_for(2 * GRID + 3, 0.25, 0.5)
    sharp = maps.clone().view(1, 3, NUM_KEYPOINTS, -1)
    sharp[:, 0] *= 10                                   # scores 50 and 0: softmax weight ~1 - 48e-22
    expected = decode_heatmaps(maps, SIZE)
    assert torch.allclose(integral_keypoints(sharp.view_as(maps), SIZE), expected, atol=1e-6)
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


def test_heatmap_targets_decode_back_to_the_keypoints():
    torch.manual_seed(0)
    keypoints = torch.rand(4, NUM_KEYPOINTS, 2) * 2.4 - 1.2  # some beyond the crop's edge
    index, dx, dy = heatmap_targets(keypoints, SIZE, GRID)
    assert index.min() >= 0 and index.max() < GRID * GRID
    inside = (keypoints.abs() < 0.95).all(dim=2)
    assert ((dx[inside] >= 0) & (dx[inside] < 1)).all() and ((dy[inside] >= 0) & (dy[inside] < 1)).all()
    maps = torch.full((4, 3, NUM_KEYPOINTS, GRID * GRID), -1.0)
    maps[:, 0].scatter_(2, index[..., None], 1.0)
    maps[:, 1], maps[:, 2] = dx[..., None].expand_as(maps[:, 1]), dy[..., None].expand_as(maps[:, 2])
    decoded = decode_heatmaps(maps.view(4, -1, GRID, GRID), SIZE).view(4, NUM_KEYPOINTS, 2)
    assert torch.allclose(decoded, keypoints, atol=1e-5)


def test_heatmap_net_returns_maps_in_training_and_keypoints_in_eval():
    model = build_model("net", SIZE, head="heatmap")
    crops = torch.rand(2, 1, SIZE, SIZE)
    assert model.train()(crops).shape == (2, 3 * NUM_KEYPOINTS, GRID, GRID)
    keypoints = model.eval()(crops)
    assert keypoints.shape == (2, 2 * NUM_KEYPOINTS)
    fused = inference_copy(model)(crops.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fused, keypoints, atol=1e-4)


def test_regression_net_keeps_its_layers():
    # The shipped model's state_dict keys: the regression head is unchanged by the heatmap option.
    keys = set(Net().state_dict())
    assert {"head.1.weight", "head.4.weight", "features.21.weight"} <= keys
    assert Net().eval()(torch.zeros(1, 1, SIZE, SIZE)).shape == (1, 2 * NUM_KEYPOINTS)


def test_unknown_head_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown head"):
        build_model("net", SIZE, head="soft-argmax")
