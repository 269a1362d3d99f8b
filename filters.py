"""Face filters that follow the face: sunglasses, a moustache or a top hat on every detected face.

    python filters.py                       # scikit-image's astronaut -> outputs/astronaut_sunglasses.png
    python filters.py photo.jpg photos/ clip.mp4 --filter hat --out results

Each overlay (make_overlays.py) knows its anchors: where certain keypoints belong in overlay pixels
(eye corners for the sunglasses, nose and mouth for the moustache, brows and eyes for the hat). The
least-squares similarity transform (scale, rotation, translation) from those anchors to a face's
predicted keypoints places the overlay; its RGBA pixels are warped into the image with that one
matrix and alpha-blended, clipped at the image borders.

Library use:

    faces = KeypointDetector().detect(rgb)
    out = apply_filter(rgb, faces, "sunglasses")       # or keypoints: (68, 2), (N, 68, 2), a list
"""

import argparse
import os
import sys

import cv2
import numpy as np

from data_load import DataError, transform_points
from make_overlays import DRAWINGS, draw_overlay

FILTERS = tuple(DRAWINGS)


def similarity_matrix(src, dst):
    """The 2x3 similarity (uniform scale, rotation, translation, no reflection) that maps the (N, 2)
    points src onto dst with the least squared error (Umeyama's closed form; exact for N = 2).

    cv2.estimateAffinePartial2D fits the same model but only by random sampling (RANSAC/LMedS);
    the closed form is deterministic and uses every anchor.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    # with points as complex numbers the similarity is dst = a * src + b for one complex a
    s = (src - src_mean) @ [1, 1j]
    d = (dst - dst_mean) @ [1, 1j]
    a = np.vdot(s, d) / max(np.vdot(s, s).real, 1e-12)
    rotation_scale = np.array([[a.real, -a.imag], [a.imag, a.real]])
    return np.hstack([rotation_scale, (dst_mean - rotation_scale @ src_mean)[:, None]])


def overlay_matrix(overlay, keypoints):
    """2x3 matrix from overlay pixels to image pixels that puts the overlay's anchors on the face."""
    return similarity_matrix(overlay.anchors, np.asarray(keypoints)[list(overlay.indices)])


def prescale(rgba, matrix):
    """Shrink the art first (INTER_AREA) when the matrix shrinks it a lot: warpAffine's bilinear
    sampling would alias. Returns the smaller art and the matrix from its pixels."""
    scale = np.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if scale >= 0.5:
        return rgba, matrix
    h, w = rgba.shape[:2]
    new_w, new_h = max(2, round(w * scale * 1.5)), max(2, round(h * scale * 1.5))
    small = cv2.resize(rgba, (new_w, new_h), interpolation=cv2.INTER_AREA)
    fx, fy = w / new_w, h / new_h
    # small pixel centre x maps to original pixel (x + 0.5) * fx - 0.5
    to_original = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
    return small, matrix @ to_original


def overlay_rgba(image, rgba, matrix, out=None):
    """Alpha-blend a straight-alpha RGBA overlay onto an RGB uint8 image through `matrix` (2x3,
    overlay pixels -> image pixels). Returns a new image (or writes into `out`).

    Only the overlay's footprint, clipped to the image, is warped and touched: parts outside the
    image are dropped, and pixels where the warped alpha is 0 keep their exact values. Colours are
    premultiplied by alpha before warping so edges don't pick up the colour of transparent pixels.
    """
    out = image.copy() if out is None else out
    rgba, matrix = prescale(rgba, np.asarray(matrix, np.float64))
    h, w = rgba.shape[:2]
    corners = transform_points(np.array([[-1, -1], [w, -1], [-1, h], [w, h]], np.float64), matrix)
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, [out.shape[1], out.shape[0]])
    if x0 >= x1 or y0 >= y1:
        return out  # entirely outside the image
    alpha = rgba[..., 3:].astype(np.float32) / 255
    premultiplied = np.dstack([rgba[..., :3].astype(np.float32) * alpha, alpha])
    to_roi = matrix - np.array([[0, 0, x0], [0, 0, y0]])
    warped = cv2.warpAffine(premultiplied, to_roi, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = out[y0:y1, x0:x1]
    a = np.clip(warped[..., 3:], 0, 1)
    blended = roi.astype(np.float32) * (1 - a) + warped[..., :3]
    roi[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def keypoint_sets(faces_or_keypoints):
    """Faces, one (68, 2) array, an (N, 68, 2) array or a list of arrays -> list of (68, 2) arrays."""
    if isinstance(faces_or_keypoints, np.ndarray):
        return list(faces_or_keypoints.reshape(-1, 68, 2))
    return [np.asarray(getattr(f, "keypoints", f), np.float64).reshape(68, 2) for f in faces_or_keypoints]


def apply_filter(image_rgb, faces_or_keypoints, name):
    """A copy of the RGB uint8 image with the named overlay placed on every face (faces whose
    anchoring keypoints are not finite numbers are left alone)."""
    overlay = draw_overlay(name)
    out = image_rgb.copy()
    for keypoints in keypoint_sets(faces_or_keypoints):
        if np.all(np.isfinite(keypoints[list(overlay.indices)])):
            overlay_rgba(out, overlay.rgba, overlay_matrix(overlay, keypoints), out=out)
    return out


# ---------------------------------------------------------------------------------------------
# Command line: images, folders and videos in, filtered copies out. Inputs are read and checked
# by detect.py's readers, so bad input is reported exactly as `python detect.py` reports it.

def output_path(out_dir, source, name, extension):
    """out_dir/<input name>_<filter><extension>, never the input file itself."""
    stem = os.path.join(out_dir, f"{os.path.splitext(os.path.basename(source))[0]}_{name}")
    path, n = stem + extension, 1
    while os.path.exists(source) and os.path.exists(path) and os.path.samefile(source, path):
        n += 1
        path = f"{stem}_{n}{extension}"
    return path


def filter_image(detector, image, source, name, out_dir):
    """Filter one image; returns the line to print. No face is an error (DataError)."""
    faces = detector.detect(image)
    if not faces:
        raise DataError(f"{source}: no face found")
    path = output_path(out_dir, source, name, ".png")
    if not cv2.imwrite(path, cv2.cvtColor(apply_filter(image, faces, name), cv2.COLOR_RGB2BGR)):
        raise DataError(f"{path}: could not write the filtered image")
    return f"{source}: {len(faces)} face{'s' * (len(faces) != 1)} -> {path}"


def filter_video(detector, source, name, out_dir, detect_every=5, smooth=True):
    """Filter every frame of a video, with the faces tracked and smoothed by detect.FaceTracker
    (a filter that jitters from frame to frame looks worse than a slightly late one)."""
    from detect import FaceTracker, open_video

    capture, frame = open_video(source, source)
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    tracker = FaceTracker(detector, fps=fps, detect_every=detect_every, smooth=smooth)
    path = output_path(out_dir, source, name, ".mp4")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
    if not writer.isOpened():
        capture.release()
        raise DataError(f"{path}: could not open the video for writing")
    frames = with_faces = 0
    try:
        while frame is not None:
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            faces = tracker(rgb)
            writer.write(cv2.cvtColor(apply_filter(rgb, faces, name), cv2.COLOR_RGB2BGR))
            frames, with_faces = frames + 1, with_faces + bool(faces)
            ok, frame = capture.read()
            frame = frame if ok else None
    finally:
        capture.release()
        writer.release()
    if not with_faces:
        raise DataError(f"{source}: no face found in {frames} frames")
    return f"{source}: {frames} frames, faces in {with_faces} -> {path}"


def run_inputs(args, detector):
    """Filter every input; report each bad one on stderr and go on. Returns the error count."""
    from detect import folder_images, input_kind
    from face_crop import load_image

    errors = 0

    def fail(error):
        nonlocal errors
        errors += 1
        print(f"filters.py: {error}", file=sys.stderr)

    if not args.inputs:
        from skimage import data  # a real face photo that ships with scikit-image
        try:
            print(filter_image(detector, data.astronaut(), "astronaut", args.filter, args.out))
        except DataError as e:
            fail(e)
    for path in args.inputs:
        try:
            kind = input_kind(path)
            if kind == "video":
                print(filter_video(detector, path, args.filter, args.out, args.detect_every,
                                   smooth=not args.no_smooth))
                continue
            images = [path] if kind == "image" else folder_images(path)
            if not images:
                raise DataError(f"{path}: no images in this folder")
            for image_path in images:
                try:
                    print(filter_image(detector, load_image(image_path), image_path, args.filter, args.out))
                except (DataError, OSError, cv2.error) as e:
                    fail(e)
        except (DataError, OSError, cv2.error) as e:
            fail(e)
    return errors


def parse_args(argv=None):
    from detect import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description="Put sunglasses, a moustache or a hat on every face.")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="images, folders of images or videos (none: scikit-image's astronaut photo)")
    parser.add_argument("--filter", choices=FILTERS, default="sunglasses", help="which overlay")
    parser.add_argument("--out", default="outputs", help="folder for the filtered images and videos")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model file (default: the shipped model)")
    parser.add_argument("--detect-every", type=int, default=5, metavar="K",
                        help="video: run the Haar cascade every K frames, track in between")
    parser.add_argument("--no-smooth", action="store_true", help="video: no temporal smoothing")
    args = parser.parse_args(argv)
    if args.detect_every < 1:
        parser.error("--detect-every must be >= 1")
    return args


def main(argv=None):
    """Run the command line; returns the exit status (1 if any input failed)."""
    from detect import KeypointDetector
    from models import ModelFileError

    args = parse_args(argv)
    try:
        detector = KeypointDetector(args.model)
        os.makedirs(args.out, exist_ok=True)
    except (ModelFileError, OSError) as e:
        print(f"filters.py: {e}", file=sys.stderr)
        return 1
    return 1 if run_inputs(args, detector) else 0


if __name__ == "__main__":
    sys.exit(main())
