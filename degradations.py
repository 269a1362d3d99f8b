"""What a poor photo does to a face, each operation once: blur, lost resolution, dim light and
sensor noise, JPEG compression, something in front of the face.

evaluate.py applies them at fixed strengths to whole test images (`--degrade`); data_load.py
applies them at random strengths to training crops (`--photo-augment`). Each takes a gray or RGB
image, uint8 in 0..255 or float in 0..1, and returns the same kind. Only `shrink` changes the
size (its caller maps the keypoints); none moves what the image shows. NumPy and OpenCV only.
"""

import cv2
import numpy as np


def in_range(values, dtype):
    """Pixel values back in an image's range and type: uint8 rounded and clipped to 0..255, a
    float type clipped to 0..1."""
    if dtype == np.uint8:
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return np.clip(values, 0, 1).astype(dtype, copy=False)


def gaussian_blur(image, sigma):
    """Out of focus: a Gaussian blur of `sigma` pixels."""
    return cv2.GaussianBlur(image, (0, 0), sigma)


def motion_kernel(length, angle):
    """A normalised line of `length` (odd) pixels through the centre of a length x length kernel,
    turned by `angle` degrees: point-symmetric, so blurring with it moves no centroid."""
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2] = 1
    centre = (length - 1) / 2
    kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D((centre, centre), angle, 1.0), (length, length))
    return kernel / kernel.sum()


def motion_blur(image, length, angle):
    """A face or a camera moving while the shutter is open: a line of `length` pixels at `angle`."""
    return cv2.filter2D(image, -1, motion_kernel(length, angle))


def shrink(image, scale):
    """The image at `scale` (below 1) of its width and height, each new pixel the mean of those it
    covers: a face farther away or a smaller camera."""
    return cv2.resize(image, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def lower_resolution(image, scale):
    """shrink(image, scale) brought back to the image's size: an upscaled thumbnail, the detail
    below that resolution gone."""
    height, width = image.shape[:2]
    return cv2.resize(shrink(image, scale), (width, height), interpolation=cv2.INTER_LINEAR)


def expose(image, gain=1.0, noise=None):
    """The image as a sensor records `gain` times the light (a number, or an array of the image's
    shape: light from one side), plus `noise` (an array in the image's units), in range."""
    values = image * gain
    if noise is not None:
        values = values + noise
    return in_range(values, image.dtype)


def tone_curve(image, gamma):
    """A float image's values (0..1) to the power `gamma`: another camera's tone curve."""
    return cv2.pow(image, gamma)


def encode_jpeg(image, quality):
    """A uint8 RGB or gray image as the bytes of a JPEG of `quality` (1-100)."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok, "OpenCV could not encode a JPEG"
    return buffer


def decode_jpeg(buffer, gray=False):
    """JPEG bytes as a uint8 RGB image (gray with `gray`), as a camera frame or an upload arrives."""
    if gray:
        return cv2.imdecode(buffer, cv2.IMREAD_GRAYSCALE)
    return cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def jpeg_round_trip(image, quality):
    """The image saved as a JPEG of `quality` and read back: 8x8 blocks, ringing, lost detail."""
    if image.dtype != np.uint8:  # JPEG holds 8-bit values
        return jpeg_round_trip(cv2.convertScaleAbs(image, alpha=255), quality).astype(np.float32) / 255
    return decode_jpeg(encode_jpeg(image, quality), gray=image.ndim == 2)


def occlude(image, box, fill):
    """A hand, hair or sunglasses in front of the face: the pixels of `box` (x, y, w, h) set to
    `fill`, one value or an array of the box's shape."""
    x, y, w, h = box
    image = image.copy()
    image[y:y + h, x:x + w] = fill
    return image
