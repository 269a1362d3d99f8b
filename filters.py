"""Face filters that follow the face: sunglasses, a moustache or a top hat on every detected face.

    python filters.py                       # scikit-image's astronaut -> outputs/astronaut_sunglasses.png
    python filters.py photo.jpg photos/ clip.mp4 --filter hat --out results
    python filters.py photo.jpg --convention course   # the course head (default: 300w, if the model has it)

Each overlay (make_overlays.py) knows its anchors: where certain keypoints belong in overlay pixels
(eye corners for the sunglasses, nose and mouth for the moustache, brows and eyes for the hat). The
least-squares similarity transform (scale, rotation, translation) from those anchors to a face's
predicted keypoints places the overlay; its RGBA pixels are warped into the image with that one
matrix and alpha-blended, clipped at the image borders. The anchors are iBUG point numbers, the
same in both labelling conventions (--convention): those differ in where some points sit (jaw,
brows, nose bridge), not in their order.

Library use:

    faces = KeypointDetector().detect(rgb)
    out = apply_filter(rgb, faces, "sunglasses")       # or keypoints: (68, 2), (N, 68, 2), a list
"""

import os
import sys
from functools import partial

import cv2
import numpy as np

from facial_keypoints.detect import KeypointDetector, face_detector_for
from facial_keypoints.face_crop import transform_points
from facial_keypoints.media import Input, OneLineParser
from facial_keypoints.outputs import Outputs
from facial_keypoints.runner import Action, add_input_options, check_input_options, process_video, run
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
# Command line: images, folders and videos in, filtered copies out, through detect.py's input
# loop (runner.run), so inputs are read, named and reported exactly as `python detect.py` does.

def filtered_bgr(name, rgb, faces):
    return cv2.cvtColor(apply_filter(rgb, faces, name), cv2.COLOR_RGB2BGR)


def filter_action(name):
    """What filters.py does with each frame: the overlay on every face, out as <input>_<name>.png
    (or .mp4); an input without a face is an error."""
    return Action(partial(filtered_bgr, name), program="filters.py", suffix=f"_{name}", image_ext=".png",
                  need_faces=True)


def filter_video(detector, source, name, out_dir, detect_every=5, smooth=True):
    """Filter every frame of a video file, the faces tracked and smoothed by tracking.FaceTracker
    (a filter that jitters from frame to frame looks worse than a slightly late one); returns the
    line the command line prints."""
    outputs = Outputs(out_dir, inputs=[source])
    item = Input("video", source, os.path.basename(source), source)
    return process_video(detector, outputs, item, filter_action(name), detect_every, smooth)[0]


def build_detector(args):
    """The detector for these options (module level: each --workers process builds its own)."""
    face_detector = face_detector_for(args.face_detector, args.upright_only)
    return KeypointDetector(args.model, face_detector, backend=args.backend,
                            convention=args.convention)


def parse_args(argv=None):
    parser = OneLineParser(description="Put sunglasses, a moustache or a hat on every face.")
    add_input_options(parser, detect_every=5)
    parser.add_argument("--filter", choices=FILTERS, default="sunglasses", help="which overlay")
    args = parser.parse_args(argv)
    check_input_options(parser, args)
    return args


def main(argv=None):
    """Run the command line; returns the exit status (1 if any input failed)."""
    args = parse_args(argv)
    return run(args, partial(build_detector, args), filter_action(args.filter))


if __name__ == "__main__":
    sys.exit(main())
