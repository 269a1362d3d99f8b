"""The course's dataset and transforms, and the augmentation that trains the shipped network.

`FacialKeypointsDataset` and its transforms (`Rescale`, `RandomCrop`, `Normalize`, `ToTensor`) are
called exactly as the course does; `Grayscale` and `FaceCrop` are course-style transforms too
(sample dict in, sample dict out) around the face crop that training uses, so Notebook 2 trains
with `FacialKeypointsDataset(..., transform=Compose([Grayscale(), FaceCrop(112)]))` on exactly the
samples of train.py. `CachedFaceDataset` and `FaceCropAugment` are what train.py uses: each image
is decoded once, and each sample is one affine warp of a jittered detector-like box (crop,
rotation, scale and shift in a single resampling). Detection gives the Haar box to the very same
crop (face_crop.crop_matrix), so the network sees at test time the crops it was trained on.
Optionally (`photo_options`, train.py --photo-augment) the crop is also degraded the way real
photos are: low resolution, blur, harsh lighting, sensor noise, JPEG, occlusion, each at random
strengths; the operations are degradations.py's, which evaluate.py's --degrade applies at fixed
ones. Files are read by media.py, crop geometry lives in face_crop.py.
"""

import math
import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from degradations import (
    expose,
    gaussian_blur,
    jpeg_round_trip,
    lower_resolution,
    motion_blur,
    occlude,
    tone_curve,
)
from facial_keypoints.face_crop import (
    FLIP_PERMUTATION,
    HAAR_BOX_SPREAD,
    crop_matrix,
    keypoints_to_box,
    normalize_keypoints,
    transform_points,
    warp_face,
)
from facial_keypoints.media import load_image, read_keypoints_csv, to_gray


class FacialKeypointsDataset(Dataset):
    """Face Landmarks dataset, as in the course: samples {'image': HxWx3 RGB, 'keypoints': (68, 2)}."""

    def __init__(self, csv_file, root_dir, transform=None):
        """
        Args:
            csv_file (string): Path to the csv file with annotations.
            root_dir (string): Directory with all the images.
            transform (callable, optional): Optional transform to be applied on a sample.
        """
        self.names, self.key_pts = read_keypoints_csv(csv_file, arrays=True)
        self.root_dir = root_dir
        self.transform = transform

    def __len__(self):
        return len(self.names)

    def __getitem__(self, idx):
        image_name = os.path.join(self.root_dir, self.names[idx])
        sample = {'image': load_image(image_name), 'keypoints': self.key_pts[idx].copy()}
        if self.transform:
            sample = self.transform(sample)
        return sample


# ---------------------------------------------------------------------------------------------
# The course's transforms: same names, call style and behaviour as the course notebooks use.

class Normalize(object):
    """Convert a color image to grayscale and normalize the color range to [0,1]."""

    def __call__(self, sample):
        image, key_pts = sample['image'], sample['keypoints']
        image_copy = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        # scale color range from [0, 255] to [0, 1]
        image_copy = image_copy / 255.0
        # scale keypoints to be centered around 0 with a range of [-1, 1]
        # mean = 100, sqrt = 50, so, pts should be (pts - 100)/50
        key_pts_copy = (np.copy(key_pts) - 100) / 50.0
        return {'image': image_copy, 'keypoints': key_pts_copy}


class Rescale(object):
    """Rescale the image in a sample to a given size.

    Args:
        output_size (tuple or int): Desired output size. If tuple, output is matched to
            output_size. If int, smaller of image edges is matched to output_size keeping
            aspect ratio the same.
    """

    def __init__(self, output_size):
        assert isinstance(output_size, (int, tuple))
        self.output_size = output_size

    def __call__(self, sample):
        image, key_pts = sample['image'], sample['keypoints']
        h, w = image.shape[:2]
        if isinstance(self.output_size, int):
            if h > w:
                new_h, new_w = self.output_size * h / w, self.output_size
            else:
                new_h, new_w = self.output_size, self.output_size * w / h
        else:
            new_h, new_w = self.output_size
        new_h, new_w = int(new_h), int(new_w)
        img = cv2.resize(image, (new_w, new_h))
        # scale the pts, too
        key_pts = key_pts * [new_w / w, new_h / h]
        return {'image': img, 'keypoints': key_pts}


class RandomCrop(object):
    """Crop randomly the image in a sample.

    Args:
        output_size (tuple or int): Desired output size. If int, square crop is made.
    """

    def __init__(self, output_size):
        assert isinstance(output_size, (int, tuple))
        if isinstance(output_size, int):
            self.output_size = (output_size, output_size)
        else:
            assert len(output_size) == 2
            self.output_size = output_size

    def __call__(self, sample):
        image, key_pts = sample['image'], sample['keypoints']
        h, w = image.shape[:2]
        new_h, new_w = self.output_size
        top = np.random.randint(0, h - new_h + 1)
        left = np.random.randint(0, w - new_w + 1)
        image = image[top: top + new_h, left: left + new_w]
        key_pts = key_pts - [left, top]
        return {'image': image, 'keypoints': key_pts}


class ToTensor(object):
    """Convert ndarrays in sample to Tensors."""

    def __call__(self, sample):
        image, key_pts = sample['image'], sample['keypoints']
        # if image has no grayscale color channel, add one
        if len(image.shape) == 2:
            image = image.reshape(image.shape[0], image.shape[1], 1)
        # swap color axis because numpy image: H x W x C, torch image: C X H X W
        image = image.transpose((2, 0, 1))
        return {'image': torch.from_numpy(image), 'keypoints': torch.from_numpy(key_pts)}


class Grayscale(object):
    """Convert the image of a sample to one gray channel (uint8), as the network sees faces."""

    def __repr__(self):
        return "Grayscale()"

    def __call__(self, sample):
        return {'image': to_gray(sample['image']), 'keypoints': sample['keypoints']}


# ---------------------------------------------------------------------------------------------
# The face crop as training uses it (its geometry is in face_crop.py, shared with detection).

def crop_to_tensor(crop):
    """uint8 HxW crop -> float tensor 1xHxW in [0, 1], the course's image scaling."""
    return torch.from_numpy(crop).float().div_(255.0).unsqueeze(0)


class RandomFlip:
    """Horizontal flip of a tv_tensors Image + KeyPoints pair with the 68-point permutation."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, image, keypoints):
        if torch.rand(()) >= self.p:
            return image, keypoints
        image, keypoints = v2.functional.horizontal_flip(image), v2.functional.horizontal_flip(keypoints)
        return image, tv_tensors.wrap(keypoints[FLIP_PERMUTATION], like=keypoints)


# Real-photo degradations of the crop, in the order they are applied (a camera's order: optics,
# light, sensor, encoder; then something in front of the face), and each one's probability at
# --photo-augment 1 (train.py): with all six groups about 1.8 of them per crop, 1 crop in 9 gets
# none; with the four train.py uses (train_data.PHOTO_GROUPS_USED) about 1.1, 1 crop in 4 none.
PHOTO_GROUPS = ("lowres", "blur", "lighting", "noise", "jpeg", "occlusion")
PHOTO_WEIGHTS = dict(lowres=0.2, blur=0.3, lighting=0.5, noise=0.3, jpeg=0.3, occlusion=0.2)


def photo_options(strength, groups=PHOTO_GROUPS):
    """FaceCropAugment's probabilities for `strength` in [0, 1] times each group's weight:
    photo_options(0.5, ["blur"]) == {"blur_p": 0.15}. Groups left out stay off."""
    return {f"{group}_p": strength * PHOTO_WEIGHTS[group] for group in groups}


class FaceCropAugment:
    """Training-time face crop: jittered detector box, one affine warp, flip, photometric jitter.

    Takes a grayscale uint8 image and its (68, 2) keypoints; returns the 1 x size x size float
    crop and the keypoints normalised to [-1, 1]. With `train=False` it is the plain crop that
    detection uses on a Haar box.

    `rotation` is the roll range (degrees). The real-photo groups (PHOTO_GROUPS) act on the crop
    after the warp, each with its own probability (`lowres_p`, ..., 0 = off, the default) and all
    their draws from the NumPy `rng`; they change pixels only, so the keypoints stay the same (an
    occluded landmark keeps its label). Their sizes are in crop pixels: on this dataset the crop
    window is about 1:1 with the image; where it spans twice the crop's pixels, as for a larger
    face in a photo, one crop pixel is two image pixels (a blur sigma of 2.5 is 5 px of the photo).
    The operations are degradations.py's. With every group off, the output and the random draws
    are exactly those of the augmentation without them.
    """

    LOWRES_FACTOR = (1.5, 4.0)       # downscale factor
    GAUSSIAN_SIGMA = (0.5, 2.5)      # px
    MOTION_LENGTHS = (3, 5, 7, 9)    # px
    LIGHTING_JITTER = 0.4            # brightness, contrast factors in 1 +- this (on top of ColorJitter's)
    GAMMA = (0.5, 2.0)               # drawn log-uniformly
    SHADOW_DEPTH = (0.2, 0.6)        # the dark side of the illumination gradient: 40-80 % of the bright one
    NOISE_STD = (2.0, 12.0)          # grey levels
    JPEG_QUALITY = (10, 60)
    OCCLUDED_AREA = (0.05, 0.25)     # of the crop; aspect ratio 1:2 to 2:1

    def __init__(self, size, train=True, rotation=20.0, box_spread=HAAR_BOX_SPREAD, flip_p=0.5,
                 brightness=0.3, contrast=0.3, lowres_p=0.0, blur_p=0.0, lighting_p=0.0, noise_p=0.0,
                 jpeg_p=0.0, occlusion_p=0.0):
        self.size, self.train = size, train
        self.rotation, self.box_spread = rotation, box_spread
        self.flip = RandomFlip(flip_p)
        self.color = v2.ColorJitter(brightness=brightness, contrast=contrast)
        self.photo_p = dict(lowres=lowres_p, blur=blur_p, lighting=lighting_p, noise=noise_p,
                            jpeg=jpeg_p, occlusion=occlusion_p)
        bad = {f"{g}_p": p for g, p in self.photo_p.items() if not 0 <= p <= 1}
        if bad:
            raise ValueError(f"probabilities must be in [0, 1]: {bad}")
        self.degrade = dict(lowres=self.random_lowres, blur=self.random_blur, lighting=self.random_lighting,
                            noise=self.random_noise, jpeg=self.random_jpeg, occlusion=self.random_occlusion)
        ramp = np.linspace(-1, 1, size, dtype=np.float32)
        self.grid = np.meshgrid(ramp, ramp)  # x, y from -1 to 1 across the crop

    def random_box(self, keypoints, rng):
        """A detector-like box with the scatter of real detector boxes around the landmarks."""
        x, y, side, _ = keypoints_to_box(keypoints)
        scale_std, x_std, y_std = self.box_spread
        new_side = side * np.exp(rng.normal(0, scale_std))
        cx = x + side / 2 + rng.normal(0, x_std) * side
        cy = y + side / 2 + rng.normal(0, y_std) * side
        return np.array([cx - new_side / 2, cy - new_side / 2, new_side, new_side])

    # Real-photo groups: each draws its strengths from `rng` and degrades a size x size float32
    # crop in [0, 1] with degradations.py's operation.

    def random_lowres(self, crop, rng):
        """A small or distant face, a cheap camera, an upscaled thumbnail."""
        small = max(1, round(self.size / rng.uniform(*self.LOWRES_FACTOR)))
        return lower_resolution(crop, small / self.size)

    def random_blur(self, crop, rng):
        """Out of focus (Gaussian) or a moving face or camera (a line at a random angle)."""
        if rng.random() < 0.5:
            return gaussian_blur(crop, rng.uniform(*self.GAUSSIAN_SIGMA))
        length, angle = int(rng.choice(self.MOTION_LENGTHS)), rng.uniform(0, 180)
        return motion_blur(crop, length, angle)

    def random_lighting(self, crop, rng):
        """Lighting of real scenes: light from one side (a linear gradient across the crop, the
        other side in shadow), under- and over-exposure, flat or harsh contrast, another tone
        curve (gamma)."""
        angle, depth = rng.uniform(0, 2 * math.pi), rng.uniform(*self.SHADOW_DEPTH)
        dx, dy = math.cos(angle), math.sin(angle)
        towards_dark = (dx * self.grid[0] + dy * self.grid[1]) / (abs(dx) + abs(dy))  # -1 .. 1
        image = expose(crop, 1 - depth * (towards_dark + 1) / 2)
        low, high = 1 - self.LIGHTING_JITTER, 1 + self.LIGHTING_JITTER
        image = expose(image, rng.uniform(low, high))  # brightness, as ColorJitter defines it
        contrast = rng.uniform(low, high)  # ColorJitter's definition: a blend with the mean grey
        image = v2.functional.adjust_contrast(torch.from_numpy(image)[None], contrast)[0].numpy()
        gamma = math.exp(rng.uniform(math.log(self.GAMMA[0]), math.log(self.GAMMA[1])))
        return tone_curve(image, gamma)

    def random_noise(self, crop, rng):
        """Sensor noise of a small sensor or a dark scene: white Gaussian noise. The field is drawn
        by a torch generator seeded from `rng`: faster than NumPy's legacy normal draws."""
        std = rng.uniform(*self.NOISE_STD) / 255
        generator = torch.Generator().manual_seed(int.from_bytes(rng.bytes(8), "little"))
        return expose(crop, noise=std * torch.randn(crop.shape, generator=generator).numpy())

    def random_jpeg(self, crop, rng):
        """JPEG artefacts of photos from the web and messengers."""
        return jpeg_round_trip(crop, int(rng.uniform(self.JPEG_QUALITY[0], self.JPEG_QUALITY[1] + 1)))

    def random_occlusion(self, crop, rng):
        """A hand, a microphone, hair or sunglasses in front of the face: a rectangle of one grey
        level or of noise. The landmarks under it keep their labels (the face is still there)."""
        area = rng.uniform(*self.OCCLUDED_AREA) * self.size ** 2
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        w, h = (min(self.size, max(1, round(math.sqrt(area * a)))) for a in (aspect, 1 / aspect))
        x, y = (int(rng.uniform(0, self.size - side + 1)) for side in (w, h))
        noisy = rng.random() < 0.5
        return occlude(crop, (x, y, w, h), rng.random((h, w)) if noisy else rng.random())

    def photo_degrade(self, crop, rng):
        """Each real-photo group in PHOTO_GROUPS order with its probability; no draw for a group
        that is off, and the very same tensor back when none applies."""
        image, degraded = crop[0].numpy(), False
        for group in PHOTO_GROUPS:
            p = self.photo_p[group]
            if p > 0 and rng.random() < p:
                image, degraded = self.degrade[group](image, rng), True
        return torch.from_numpy(image)[None] if degraded else crop

    def __call__(self, gray, keypoints, rng=np.random):
        if not self.train:
            matrix = crop_matrix(keypoints_to_box(keypoints), self.size)
            crop = crop_to_tensor(warp_face(gray, matrix, self.size))
            points = transform_points(keypoints, matrix)
            return crop, torch.from_numpy(normalize_keypoints(points, self.size)).float()
        angle = float(np.clip(rng.normal(0, self.rotation / 2), -self.rotation, self.rotation))
        matrix = crop_matrix(self.random_box(keypoints, rng), self.size, angle=angle)
        crop = self.photo_degrade(crop_to_tensor(warp_face(gray, matrix, self.size)), rng)
        image = tv_tensors.Image(crop)
        points = tv_tensors.KeyPoints(transform_points(keypoints, matrix),
                                      canvas_size=(self.size, self.size), dtype=torch.float32)
        image, points = self.flip(image, points)
        image = self.color(image)
        return image.as_subclass(torch.Tensor), normalize_keypoints(points.as_subclass(torch.Tensor),
                                                                    self.size)


class FaceCrop(object):
    """FaceCropAugment as a course-style transform: a sample with a gray uint8 image (Grayscale
    first) and its (68, 2) keypoints in image pixels in; the 1 x size x size float crop in [0, 1]
    and the keypoints normalised to [-1, 1] out, both tensors (so no ToTensor after it).

    `train` and `augment_options` are FaceCropAugment's: with train=True a jittered detector-like
    box, rotation, flip and brightness/contrast jitter, drawn from the global NumPy and torch
    generators exactly as CachedFaceDataset draws them; with train=False the plain crop around
    the box the Haar detector typically draws around the labelled points (keypoints_to_box).
    """

    def __init__(self, size, train=True, **augment_options):
        self.options = dict(size=size, train=train, **augment_options)
        self.augment = FaceCropAugment(size, train=train, **augment_options)

    def __repr__(self):  # what a printed Compose shows
        return f"FaceCrop({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    def __call__(self, sample):
        image = sample['image']
        if image.ndim != 2:
            raise ValueError(f"FaceCrop takes a gray image, not {image.shape}: put Grayscale() before it")
        crop, key_pts = self.augment(image, sample['keypoints'])
        return {'image': crop, 'keypoints': key_pts}


class CachedFaceDataset(Dataset):
    """Course-format data decoded once into memory (grayscale), cropped and augmented per sample.

    `indices` selects rows of the CSV (e.g. a validation split by identity); `augment_options` go
    to FaceCropAugment (e.g. rotation=10.0). With `convention` (an index of models.CONVENTIONS,
    the labelling the CSV follows), each sample is (crop, keypoints, convention): the two-head
    network's training set mixes sets labelled two ways, and each sample trains its own head.
    """

    def __init__(self, csv_file, root_dir, size, train=True, indices=None, progress=False,
                 convention=None, **augment_options):
        self.names, self.keypoints = read_keypoints_csv(csv_file, root_dir, arrays=True)
        if indices is not None:
            rows = list(indices)
            self.names, self.keypoints = [self.names[i] for i in rows], self.keypoints[rows]
        names = self.names
        if progress:
            from tqdm import tqdm
            names = tqdm(names, desc=f"decoding {os.path.basename(root_dir.rstrip('/'))}", leave=False)
        self.images = [to_gray(load_image(os.path.join(root_dir, n))) for n in names]
        self.transform = FaceCropAugment(size, train=train, **augment_options)
        self.convention = convention

    def __len__(self):
        return len(self.names)

    def __getitem__(self, idx):
        crop, keypoints = self.transform(self.images[idx], self.keypoints[idx])
        return (crop, keypoints) if self.convention is None else (crop, keypoints, self.convention)
