"""The course's dataset and transforms, and the augmentation that trains the shipped network.

`FacialKeypointsDataset` and its transforms (`Rescale`, `RandomCrop`, `Normalize`, `ToTensor`) are
called exactly as the course does. `CachedFaceDataset` and `FaceCropAugment` are what train.py
uses: each image is decoded once, and each sample is one affine warp of a jittered detector-like
box (crop, rotation, scale and shift in a single resampling). Detection gives the Haar box to the
very same crop (face_crop.crop_matrix), so the network sees at test time the crops it was trained
on. Files are read by media.py, crop geometry lives in face_crop.py.
"""

import os

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from face_crop import (
    FLIP_PERMUTATION,
    HAAR_BOX_SPREAD,
    NUM_KEYPOINTS,
    crop_matrix,
    keypoints_to_box,
    normalize_keypoints,
    transform_points,
    warp_face,
)
from media import load_image, read_keypoints_csv, to_gray


class FacialKeypointsDataset(Dataset):
    """Face Landmarks dataset, as in the course: samples {'image': HxWx3 RGB, 'keypoints': (68, 2)}."""

    def __init__(self, csv_file, root_dir, transform=None):
        """
        Args:
            csv_file (string): Path to the csv file with annotations.
            root_dir (string): Directory with all the images.
            transform (callable, optional): Optional transform to be applied on a sample.
        """
        self.key_pts_frame = read_keypoints_csv(csv_file)
        self.root_dir = root_dir
        self.transform = transform

    def __len__(self):
        return len(self.key_pts_frame)

    def keypoints(self, idx):
        return self.key_pts_frame.iloc[idx, 1:].to_numpy(dtype=np.float64).reshape(-1, 2)

    def __getitem__(self, idx):
        image_name = os.path.join(self.root_dir, self.key_pts_frame.iloc[idx, 0])
        sample = {'image': load_image(image_name), 'keypoints': self.keypoints(idx)}
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


class FaceCropAugment:
    """Training-time face crop: jittered detector box, one affine warp, flip, photometric jitter.

    Takes a grayscale uint8 image and its (68, 2) keypoints; returns the 1 x size x size float
    crop and the keypoints normalised to [-1, 1]. With `train=False` it is the plain crop that
    detection uses on a Haar box.
    """

    def __init__(self, size, train=True, rotation=20.0, box_spread=HAAR_BOX_SPREAD, flip_p=0.5,
                 brightness=0.3, contrast=0.3):
        self.size, self.train = size, train
        self.rotation, self.box_spread = rotation, box_spread
        self.flip = RandomFlip(flip_p)
        self.color = v2.ColorJitter(brightness=brightness, contrast=contrast)

    def random_box(self, keypoints, rng):
        """A detector-like box with the scatter of real detector boxes around the landmarks."""
        x, y, side, _ = keypoints_to_box(keypoints)
        scale_std, x_std, y_std = self.box_spread
        new_side = side * np.exp(rng.normal(0, scale_std))
        cx = x + side / 2 + rng.normal(0, x_std) * side
        cy = y + side / 2 + rng.normal(0, y_std) * side
        return np.array([cx - new_side / 2, cy - new_side / 2, new_side, new_side])

    def __call__(self, gray, keypoints, rng=np.random):
        if not self.train:
            matrix = crop_matrix(keypoints_to_box(keypoints), self.size)
            crop = crop_to_tensor(warp_face(gray, matrix, self.size))
            points = transform_points(keypoints, matrix)
            return crop, torch.from_numpy(normalize_keypoints(points, self.size)).float()
        angle = float(np.clip(rng.normal(0, self.rotation / 2), -self.rotation, self.rotation))
        matrix = crop_matrix(self.random_box(keypoints, rng), self.size, angle=angle)
        image = tv_tensors.Image(crop_to_tensor(warp_face(gray, matrix, self.size)))
        points = tv_tensors.KeyPoints(transform_points(keypoints, matrix),
                                      canvas_size=(self.size, self.size), dtype=torch.float32)
        image, points = self.flip(image, points)
        image = self.color(image)
        return image.as_subclass(torch.Tensor), normalize_keypoints(points.as_subclass(torch.Tensor),
                                                                    self.size)


class CachedFaceDataset(Dataset):
    """Course-format data decoded once into memory (grayscale), cropped and augmented per sample.

    `indices` selects rows of the CSV (e.g. a validation split by identity); `augment_options` go
    to FaceCropAugment (e.g. rotation=10.0).
    """

    def __init__(self, csv_file, root_dir, size, train=True, indices=None, progress=False,
                 **augment_options):
        frame = read_keypoints_csv(csv_file, root_dir)
        if indices is not None:
            frame = frame.iloc[list(indices)]
        self.names = list(frame.iloc[:, 0])
        self.keypoints = frame.iloc[:, 1:].to_numpy(dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2)
        names = self.names
        if progress:
            from tqdm import tqdm
            names = tqdm(names, desc=f"decoding {os.path.basename(root_dir.rstrip('/'))}", leave=False)
        self.images = [to_gray(load_image(os.path.join(root_dir, n))) for n in names]
        self.transform = FaceCropAugment(size, train=train, **augment_options)

    def __len__(self):
        return len(self.names)

    def __getitem__(self, idx):
        return self.transform(self.images[idx], self.keypoints[idx])
