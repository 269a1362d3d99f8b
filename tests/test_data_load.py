"""data_load.py: transforms keep keypoints on the pixels they label, the real-photo degradations,
the flip permutation, the course pipeline, image formats, bad input.

The geometric tests draw one small bright dot per keypoint (68 images, one dot each, so every
mark is identified), put each image through the same transform with the same random draws, find
the dot in the output by its centroid and compare it with where the transform says the keypoint
went.
"""

import hashlib
import os

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import face_keypoints, write_course_dataset
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms, tv_tensors
from torchvision.transforms import v2

from data_load import (
    PHOTO_GROUPS,
    CachedFaceDataset,
    FaceCropAugment,
    FacialKeypointsDataset,
    Normalize,
    RandomCrop,
    RandomFlip,
    Rescale,
    ToTensor,
    crop_to_tensor,
    photo_options,
)
from facial_keypoints import media
from facial_keypoints.face_crop import (
    FLIP_PERMUTATION,
    crop_matrix,
    denormalize_keypoints,
    keypoints_to_box,
    normalize_keypoints,
    transform_points,
    warp_face,
)
from facial_keypoints.media import DataError, load_image

TOLERANCE = 1.5  # px, as the issue asks

# ---------------------------------------------------------------------------------------------
# Marks: one Gaussian dot per keypoint, found again by its centroid.


def dot_image(shape, point, sigma=1.6):
    """uint8 image of the given (h, w) shape, black but for a Gaussian dot centred at point (x, y)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    dot = np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / (2 * sigma ** 2))
    return np.round(255 * dot).astype(np.uint8)


def find_dot(image):
    """(x, y) centroid of the brightest blob of a 2-D image; None when there is no dot."""
    image = np.asarray(image, dtype=np.float64)
    image = image - np.median(image)
    if image.max() <= 1e-6:  # uniform: the dot is outside the image
        return None
    y, x = np.unravel_index(np.argmax(image), image.shape)
    y0, y1, x0, x1 = max(0, y - 5), y + 6, max(0, x - 5), x + 6
    window = image[y0:y1, x0:x1]
    weights = np.clip(window - 0.3 * window.max(), 0, None)
    yy, xx = np.mgrid[y0:y0 + window.shape[0], x0:x0 + window.shape[1]]
    return np.array([(weights * xx).sum(), (weights * yy).sum()]) / weights.sum()


def gray_of(image):
    """A transform's output image (HxWx3 / HxW array, or CxHxW tensor) as one 2-D array."""
    if isinstance(image, torch.Tensor):
        return image.detach().numpy()[0]
    return image[..., 0] if image.ndim == 3 else image


def check_marks(outputs, expected, size=None, margin=4.0):
    """outputs[j]: the transformed image of mark j; expected[j]: where mark j should be.

    Points within `margin` px of the border of an output of side `size` are skipped (a dot cut by
    the border has a biased centroid); returns how many were checked.
    """
    checked = 0
    for j, (image, want) in enumerate(zip(outputs, expected, strict=True)):
        if size is not None and not (margin <= want[0] <= size - 1 - margin
                                     and margin <= want[1] <= size - 1 - margin):
            continue
        found = find_dot(gray_of(image))
        assert found is not None, f"mark {j} vanished (expected at {want})"
        error = np.linalg.norm(found - want)
        assert error <= TOLERANCE, f"mark {j} found at {found}, keypoint says {want} ({error:.2f} px off)"
        checked += 1
    return checked


POINTS = face_keypoints(center=(150.0, 170.0), scale=1.3)  # in a 320 x 280 (h x w) image
SHAPE = (320, 280)


def marked_images(points=POINTS, shape=SHAPE):
    return [dot_image(shape, p) for p in points]


def as_rgb(gray):
    return np.repeat(gray[..., None], 3, axis=2)


# ---------------------------------------------------------------------------------------------
# Geometric transforms


@pytest.mark.parametrize("output_size", [250, (200, 260), 400])
def test_rescale_keeps_marks_on_keypoints(output_size):
    outputs = [Rescale(output_size)({"image": as_rgb(m), "keypoints": POINTS}) for m in marked_images()]
    keypoints = outputs[0]["keypoints"]
    assert all(np.array_equal(o["keypoints"], keypoints) for o in outputs)
    assert check_marks([o["image"] for o in outputs], keypoints) == 68


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_crop_keeps_marks_on_keypoints(seed):
    rescale, crop = Rescale(250), RandomCrop(224)
    outputs = []
    for mark in marked_images():
        np.random.seed(seed)  # the same crop for every mark
        outputs.append(crop(rescale({"image": as_rgb(mark), "keypoints": POINTS})))
    keypoints = outputs[0]["keypoints"]
    assert all(np.array_equal(o["keypoints"], keypoints) for o in outputs)
    assert outputs[0]["image"].shape == (224, 224, 3)
    assert check_marks([o["image"] for o in outputs], keypoints, size=224) >= 60


@pytest.mark.parametrize("angle,scale,shift,flip", [
    (0.0, 1.0, 0.0, False), (15.0, 1.0, 0.157, False), (-25.0, 0.8, 0.1, False),
    (10.0, 1.3, -0.05, True), (0.0, 1.0, 0.157, True)])
def test_face_crop_keeps_marks_on_keypoints(angle, scale, shift, flip):
    size = 112
    x, y, side, _ = keypoints_to_box(POINTS)
    box = (x + 7, y - 4, side * scale, side * scale * 0.95)  # a detector box off the landmarks a bit
    matrix = crop_matrix(box, size, margin=1.3, shift=shift, angle=angle, flip=flip)
    expected = transform_points(POINTS, matrix)
    crops = [warp_face(m, matrix, size) for m in marked_images()]
    assert crops[0].shape == (size, size)
    assert check_marks(crops, expected, size=size) >= 50


def test_face_crop_flip_mirrors_the_crop():
    size, box = 96, keypoints_to_box(POINTS)
    plain = transform_points(POINTS, crop_matrix(box, size, angle=8))
    mirrored = transform_points(POINTS, crop_matrix(box, size, angle=8, flip=True))
    np.testing.assert_allclose(mirrored, np.c_[size - 1 - plain[:, 0], plain[:, 1]], atol=1e-9)


def test_random_flip_moves_marks_with_the_permutation():
    h, w = SHAPE
    keypoints = tv_tensors.KeyPoints(torch.tensor(POINTS, dtype=torch.float32), canvas_size=(h, w))
    outputs = [RandomFlip(p=1.0)(tv_tensors.Image(torch.from_numpy(m)[None]), keypoints)
               for m in marked_images()]
    flipped = outputs[0][1].numpy()
    # keypoint i of the flipped face is the mirror of point FLIP_PERMUTATION[i], so mark j
    # (drawn at point j) must now lie at flipped keypoint FLIP_PERMUTATION[j] (an involution).
    assert check_marks([image for image, _ in outputs], flipped[FLIP_PERMUTATION]) == 68
    np.testing.assert_allclose(flipped[:, 0], w - 1 - POINTS[FLIP_PERMUTATION, 0], atol=1e-4)

    image, same = RandomFlip(p=0.0)(tv_tensors.Image(torch.from_numpy(marked_images()[0])[None]), keypoints)
    assert torch.equal(same, keypoints)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("flip_p", [0.0, 1.0])
def test_face_crop_augment_train_keeps_marks_on_keypoints(seed, flip_p):
    size = 112
    augment = FaceCropAugment(size, train=True, flip_p=flip_p)
    outputs = []
    for mark in marked_images():
        torch.manual_seed(seed)  # the same flip and colour jitter for every mark
        outputs.append(augment(mark, POINTS, rng=np.random.default_rng(seed)))  # the same warp
    crop, normalized = outputs[0]
    assert crop.shape == (1, size, size) and crop.dtype == torch.float32
    assert normalized.shape == (68, 2)
    assert all(torch.equal(k, normalized) for _, k in outputs)
    keypoints = denormalize_keypoints(normalized.numpy(), size)
    order = FLIP_PERMUTATION if flip_p == 1.0 else list(range(68))
    assert check_marks([c for c, _ in outputs], keypoints[order], size=size) >= 45


def test_face_crop_augment_eval_is_the_detector_crop():
    size = 112
    augment = FaceCropAugment(size, train=False)
    outputs = [augment(m, POINTS) for m in marked_images()]
    keypoints = denormalize_keypoints(outputs[0][1].numpy(), size)
    matrix = crop_matrix(keypoints_to_box(POINTS), size)
    np.testing.assert_allclose(keypoints, transform_points(POINTS, matrix), atol=1e-4)
    assert check_marks([c for c, _ in outputs], keypoints, size=size) == 68


# ---------------------------------------------------------------------------------------------
# Real-photo degradations: pixels only, each group on its own switch, the old crops by default


@pytest.fixture(scope="module")
def marks():
    return marked_images()


def textured_image(shape=SHAPE, seed=0):
    """A grey image with detail at every scale a face has (blurred noise), for pixel changes."""
    noise = np.random.default_rng(seed).random(shape).astype(np.float32)
    detail = cv2.GaussianBlur(noise, (0, 0), 1.5) + cv2.GaussianBlur(noise, (0, 0), 6)
    return cv2.normalize(detail, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)


def augment_before_photo_groups(gray, keypoints, rng, size=112):
    """FaceCropAugment(size) as it was before the real-photo groups (a frozen copy of its training
    path): its defaults must still give exactly these crops and random draws."""
    angle = float(np.clip(rng.normal(0, 10.0), -20.0, 20.0))
    matrix = crop_matrix(FaceCropAugment(size).random_box(keypoints, rng), size, angle=angle)
    image = tv_tensors.Image(crop_to_tensor(warp_face(gray, matrix, size)))
    points = tv_tensors.KeyPoints(transform_points(keypoints, matrix), canvas_size=(size, size),
                                  dtype=torch.float32)
    image, points = RandomFlip(0.5)(image, points)
    image = v2.ColorJitter(brightness=0.3, contrast=0.3)(image)
    return image.as_subclass(torch.Tensor), normalize_keypoints(points.as_subclass(torch.Tensor), size)


def seeded(augment, image, seed):
    """augment(image) with NumPy and torch draws fixed by seed (the same draws for every image)."""
    torch.manual_seed(seed)
    return augment(image, POINTS, rng=np.random.default_rng(seed))


def occluded_rectangle(seed, flip_p, size=112):
    """Where FaceCropAugment(occlusion_p=1) puts its rectangle for these draws, as x0, y0, x1, y1
    (exclusive): the pixels that differ from a black and from a white image (colour jitter off)."""
    augment = FaceCropAugment(size, flip_p=flip_p, occlusion_p=1.0, brightness=0, contrast=0)
    changed = np.zeros((size, size), bool)
    for level in (0, 255):
        crop, _ = seeded(augment, np.full(SHAPE, level, np.uint8), seed)
        changed |= crop[0].numpy() != level / 255
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    assert changed.sum() == (x1 - x0) * (y1 - y0), "the occluded pixels are not one filled rectangle"
    return x0, y0, x1, y1


@pytest.mark.parametrize("seed,flip_p", [(0, 0.0), (1, 1.0), (2, 0.0), (3, 1.0)])
@pytest.mark.parametrize("group", PHOTO_GROUPS)
def test_photo_groups_keep_marks_on_keypoints(group, seed, flip_p, marks):
    size = 112
    outputs = [seeded(FaceCropAugment(size, flip_p=flip_p, **{f"{group}_p": 1.0}), m, seed) for m in marks]
    _, plain = seeded(FaceCropAugment(size, flip_p=flip_p), marks[0], seed)
    assert all(torch.equal(k, plain) for _, k in outputs), "a pixel-only degradation moved the keypoints"
    keypoints = denormalize_keypoints(plain.numpy(), size)[FLIP_PERMUTATION if flip_p else list(range(68))]
    crops = [c for c, _ in outputs]
    if group == "occlusion":  # the marks under the rectangle are hidden; all the others are found
        x0, y0, x1, y1 = occluded_rectangle(seed, flip_p)
        assert 0.05 * size ** 2 - size <= (x1 - x0) * (y1 - y0) <= 0.25 * size ** 2 + size
        m = 4  # a dot cut by the rectangle's edge has a biased centroid
        visible = [j for j, (x, y) in enumerate(keypoints)
                   if not (x0 - m <= x < x1 + m and y0 - m <= y < y1 + m)]
        assert len(visible) < 68, "the rectangle hides no mark: this seed tests nothing"
        for j in visible:
            crops[j] = crops[j].clone()
            crops[j][0, y0:y1, x0:x1] = crops[j].median()
        crops, keypoints = [crops[j] for j in visible], keypoints[visible]
    assert check_marks(crops, keypoints, size=size) >= (20 if group == "occlusion" else 45)


@pytest.mark.parametrize("group", PHOTO_GROUPS)
def test_photo_group_changes_pixels_only_when_on(group):
    gray = textured_image()
    for seed in range(3):
        torch.manual_seed(seed)
        before = augment_before_photo_groups(gray, POINTS, np.random.default_rng(seed))
        off = seeded(FaceCropAugment(112, **{f"{group}_p": 0.0}), gray, seed)
        on = seeded(FaceCropAugment(112, **{f"{group}_p": 1.0}), gray, seed)
        assert torch.equal(off[0], before[0]) and torch.equal(off[1], before[1])
        assert torch.equal(on[1], before[1])
        assert on[0].dtype == torch.float32 and 0 <= on[0].min() and on[0].max() <= 1
        change = float((on[0] - before[0]).abs().mean()) * 255
        assert change > 0.5, f"{group} at p=1 changed the crop by {change:.2f} grey levels on average"


def test_default_augment_is_the_one_before_photo_groups():
    """Same crops, keypoints and random stream as before the groups, with the global np.random
    (as training draws) and with a Generator; the defaults and all groups at p=0 alike."""
    gray = textured_image()
    for augment in (FaceCropAugment(112), FaceCropAugment(112, **photo_options(0.0)),
                    FaceCropAugment(112, **photo_options(1.0, groups=[]))):
        for seed in range(3):
            results = []
            for run in (augment, lambda g, k, rng: augment_before_photo_groups(g, k, rng)):
                np.random.seed(seed)
                torch.manual_seed(seed)
                generator = np.random.default_rng(seed)
                samples = [run(gray, POINTS, rng=rng) for rng in (np.random, np.random, generator)]
                results.append((samples, np.random.random(), generator.random(), torch.rand(())))
            (got, *got_next), (want, *want_next) = results
            for (image, points), (image_want, points_want) in zip(got, want, strict=True):
                assert torch.equal(image, image_want) and torch.equal(points, points_want)
            assert got_next == want_next, "the augmentation draws other random numbers than before"


@pytest.mark.parametrize("group", PHOTO_GROUPS)
def test_photo_group_is_applied_with_its_probability(group):
    augment = FaceCropAugment(32, **{f"{group}_p": 0.3})
    crop, rng = crop_to_tensor(textured_image((32, 32))), np.random.default_rng(0)
    applied = sum(augment.photo_degrade(crop, rng) is not crop for _ in range(300))
    assert 60 <= applied <= 120, f"{group} at p=0.3 applied {applied} times in 300"  # 90 +- 3.8 std


def test_photo_options_and_bad_probabilities():
    assert photo_options(0.5, ["blur"]) == {"blur_p": 0.15}
    assert set(photo_options(1.0)) == {f"{g}_p" for g in PHOTO_GROUPS}
    assert all(0 < p <= 1 for p in photo_options(1.0).values())
    with pytest.raises(ValueError, match="blur_p"):
        FaceCropAugment(112, blur_p=1.5)
    evaluation = FaceCropAugment(112, train=False, **photo_options(1.0))  # never on the detector crop
    for (image, points), (plain, plain_points) in zip(
            [evaluation(m, POINTS) for m in marked_images()[:3]],
            [FaceCropAugment(112, train=False)(m, POINTS) for m in marked_images()[:3]], strict=True):
        assert torch.equal(image, plain) and torch.equal(points, plain_points)


# ---------------------------------------------------------------------------------------------
# The 68-point left/right permutation

MIRROR_PAIRS = {0: 16, 4: 12, 17: 26, 21: 22, 31: 35, 36: 45, 39: 42, 37: 44, 41: 46,
                48: 54, 50: 52, 59: 55, 60: 64, 67: 65}
ON_THE_MIDLINE = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def test_flip_permutation_pairs_mirror_points():
    perm = list(FLIP_PERMUTATION)
    assert sorted(perm) == list(range(68)), "not a permutation of the 68 points"
    assert all(perm[perm[i]] == i for i in range(68)), "flipping twice must give the identity"
    for a, b in MIRROR_PAIRS.items():
        assert perm[a] == b and perm[b] == a, f"point {a} should swap with {b}, not {perm[a]}"
    for i in ON_THE_MIDLINE:
        assert perm[i] == i, f"midline point {i} should map to itself"


def test_flip_permutation_matches_the_mean_face(dataset_dir):
    """Mirror the training set's mean shape and permute it: each point must land nearest to itself."""
    csv_file = os.path.join(dataset_dir, "training_frames_keypoints.csv")
    _, faces = media.read_keypoints_csv(csv_file, arrays=True)
    faces = faces - faces.mean(1, keepdims=True)
    faces /= np.linalg.norm(faces[:, 36] - faces[:, 45], axis=1)[:, None, None]
    mean = faces.mean(0)
    mirrored = (mean * [-1, 1])[FLIP_PERMUTATION]
    distances = np.linalg.norm(mirrored[:, None] - mean[None], axis=2)
    nearest = distances.argmin(1)
    wrong = [(i, int(n)) for i, n in enumerate(nearest) if n != i]
    assert not wrong, f"mirrored point i lands nearest to point n for (i, n) in {wrong}"


# ---------------------------------------------------------------------------------------------
# The course pipeline

COURSE_PIPELINE = transforms.Compose([Rescale(250), RandomCrop(224), Normalize(), ToTensor()])


def check_course_samples(dataset, indices):
    for i in indices:
        sample = dataset[i]
        image, keypoints = sample["image"], sample["keypoints"]
        assert isinstance(image, torch.Tensor) and tuple(image.shape) == (1, 224, 224)
        assert tuple(keypoints.shape) == (68, 2)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_course_pipeline_on_the_dataset(dataset_dir):
    dataset = FacialKeypointsDataset(csv_file=os.path.join(dataset_dir, "training_frames_keypoints.csv"),
                                     root_dir=os.path.join(dataset_dir, "training"))
    assert len(dataset) == 3462
    raw = dataset[0]
    assert raw["image"].ndim == 3 and raw["image"].shape[2] == 3 and raw["image"].dtype == np.uint8
    assert raw["keypoints"].shape == (68, 2)

    transformed = FacialKeypointsDataset(os.path.join(dataset_dir, "training_frames_keypoints.csv"),
                                         os.path.join(dataset_dir, "training"), transform=COURSE_PIPELINE)
    check_course_samples(transformed, [0, 1, len(transformed) - 1])
    batch = next(iter(DataLoader(transformed, batch_size=4, shuffle=True, num_workers=0)))
    assert tuple(batch["image"].shape) == (4, 1, 224, 224)
    assert tuple(batch["keypoints"].shape) == (4, 68, 2)


def test_course_pipeline_on_a_tiny_csv(tiny_dataset):
    root, counts = tiny_dataset
    dataset = FacialKeypointsDataset(csv_file=os.path.join(root, "training_frames_keypoints.csv"),
                                     root_dir=os.path.join(root, "training"), transform=COURSE_PIPELINE)
    assert len(dataset) == counts["training"]
    check_course_samples(dataset, range(len(dataset)))
    # Normalize's keypoint scaling is the course's: (pts - 100) / 50 after rescale and crop.
    np.random.seed(0)
    plain = FacialKeypointsDataset(os.path.join(root, "training_frames_keypoints.csv"),
                                   os.path.join(root, "training"))[0]
    normalized = Normalize()(plain)
    np.testing.assert_allclose(normalized["keypoints"], (plain["keypoints"] - 100) / 50)
    assert normalized["image"].shape == plain["image"].shape[:2]


def test_keypoints_come_from_the_csv(tiny_dataset):
    root, _ = tiny_dataset
    csv = os.path.join(root, "test_frames_keypoints.csv")
    frame = pd.read_csv(csv)
    dataset = FacialKeypointsDataset(csv, os.path.join(root, "test"))
    for i in range(len(dataset)):
        np.testing.assert_array_equal(dataset[i]["keypoints"],
                                      frame.iloc[i, 1:].to_numpy(dtype=float).reshape(68, 2))


def test_data_dir_follows_fkp_data(monkeypatch):
    monkeypatch.setenv("FKP_DATA", "/somewhere/else")
    assert media.data_dir() == "/somewhere/else"
    assert media.data_path("training") == os.path.join("/somewhere/else", "training")
    monkeypatch.delenv("FKP_DATA")
    assert media.data_dir() == "data"


# ---------------------------------------------------------------------------------------------
# Image formats: everything becomes HxWx3 uint8 RGB

RED_RGB = (200, 30, 10)


def rgb_test_image():
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[:, :15] = RED_RGB
    image[:, 15:] = (10, 120, 240)
    return image


def check_rgb(loaded, expected):
    assert loaded.dtype == np.uint8 and loaded.shape == expected.shape
    np.testing.assert_allclose(loaded.astype(int), expected.astype(int), atol=1)


def test_load_image_rgb_and_rgba(tmp_path):
    rgb = rgb_test_image()
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    check_rgb(load_image(str(tmp_path / "rgb.png")), rgb)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    check_rgb(load_image(str(tmp_path / "rgba.png")), rgb)


def test_load_image_grayscale_8_and_16_bit(tmp_path):
    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    check_rgb(load_image(str(tmp_path / "gray.png")), np.dstack([gray] * 3))
    cv2.imwrite(str(tmp_path / "gray16.png"), gray.astype(np.uint16) * 257)
    check_rgb(load_image(str(tmp_path / "gray16.png")), np.dstack([gray] * 3))


def test_load_image_color_16_bit(tmp_path):
    rgb = rgb_test_image()
    cv2.imwrite(str(tmp_path / "rgb16.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    check_rgb(load_image(str(tmp_path / "rgb16.png")), rgb)


@pytest.mark.parametrize("transparency", [False, True])
def test_load_image_palette(tmp_path, transparency):
    rgb = rgb_test_image()
    palette_image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert palette_image.mode == "P"
    if transparency:
        palette_image.info["transparency"] = 0
    path = str(tmp_path / "palette.png")
    palette_image.save(path)
    check_rgb(load_image(path), np.asarray(palette_image.convert("RGB")))


def test_load_image_jpeg_keeps_channel_order(tmp_path):
    rgb = rgb_test_image()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "rgb.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    loaded = load_image(str(tmp_path / "rgb.jpg"))
    assert loaded.shape == rgb.shape and loaded.dtype == np.uint8
    assert np.abs(loaded[10, 5].astype(int) - RED_RGB).max() <= 12  # red stays red, not blue


# ---------------------------------------------------------------------------------------------
# Bad input: one DataError naming the file


def test_missing_csv_names_the_file(tmp_path):
    missing = str(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="nope.csv"):
        FacialKeypointsDataset(missing, str(tmp_path))


@pytest.mark.parametrize("content", [
    "name,x0,y0\nimg.jpg,1,2\n",                          # too few columns
    "",                                                    # empty file
    "," + ",".join(map(str, range(136))) + "\nimg.jpg," + ",".join(["a"] * 136) + "\n",  # not numbers
])
def test_malformed_csv_names_the_file(tmp_path, content):
    csv = tmp_path / "bad_keypoints.csv"
    csv.write_text(content)
    with pytest.raises(DataError, match="bad_keypoints.csv"):
        FacialKeypointsDataset(str(csv), str(tmp_path))


def test_missing_image_names_the_file(tiny_dataset):
    root, _ = tiny_dataset
    os.remove(os.path.join(root, "training", "Person_training_01.jpg"))
    dataset = FacialKeypointsDataset(os.path.join(root, "training_frames_keypoints.csv"),
                                     os.path.join(root, "training"))
    dataset[0]  # the others still load
    with pytest.raises(DataError, match="Person_training_01.jpg"):
        dataset[1]
    with pytest.raises(DataError, match="Person_training_01.jpg"):
        CachedFaceDataset(os.path.join(root, "training_frames_keypoints.csv"),
                          os.path.join(root, "training"), size=64)


@pytest.mark.parametrize("content", [b"this is not an image", b""])
def test_unreadable_image_names_the_file(tiny_dataset, content):
    root, _ = tiny_dataset
    with open(os.path.join(root, "training", "Person_training_02.jpg"), "wb") as f:
        f.write(content)
    dataset = FacialKeypointsDataset(os.path.join(root, "training_frames_keypoints.csv"),
                                     os.path.join(root, "training"))
    with pytest.raises(DataError, match="Person_training_02.jpg"):
        dataset[2]


def snapshot(folder):
    """Every file under folder with its size, modification time and content hash."""
    state = {}
    for root, dirs, files in os.walk(folder):
        state.update({os.path.relpath(os.path.join(root, d), folder): "folder" for d in dirs})
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            state[os.path.relpath(path, folder)] = (os.path.getsize(path), os.stat(path).st_mtime_ns, digest)
    return state


def test_reading_never_modifies_the_data_dir(tmp_path):
    root = str(tmp_path / "data")
    write_course_dataset(root, n_train=4, n_test=3)
    before = snapshot(root)
    for split in ("training", "test"):
        csv, folder = os.path.join(root, f"{split}_frames_keypoints.csv"), os.path.join(root, split)
        for transform in (None, COURSE_PIPELINE):
            dataset = FacialKeypointsDataset(csv, folder, transform)
            for i in range(len(dataset)):
                dataset[i]
        cached = CachedFaceDataset(csv, folder, size=64, train=True)
        for i in range(len(cached)):
            cached[i]
    assert snapshot(root) == before
