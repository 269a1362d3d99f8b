"""Keypoint jitter of detect.py on video, with and without tracking and smoothing.

    python jitter.py                  # synthetic clips made from the astronaut photo
    python jitter.py --frames 300 --flip

A still photo shown through a camera that moves by random sub-pixel amounts (cv2.warpAffine) and
adds sensor noise. The face does not move apart from the known shift, so every bit of spread in a
keypoint after removing that shift is jitter: the pixel standard deviation per point
(sqrt(var x + var y) over the frames), averaged over the 68 points. A moving clip (constant
velocity) shows what smoothing costs: its lag behind the unsmoothed keypoints. (Frame rates are
bench.py's: bench_speed.end_to_end.)
"""

import cv2
import numpy as np
import torch

from facial_keypoints.backends import DEFAULT_MODEL
from facial_keypoints.detect import KeypointDetector
from facial_keypoints.media import OneLineParser
from facial_keypoints.tracking import FaceTracker

FRAME_SIZE = (640, 480)


def astronaut_frame(size=FRAME_SIZE):
    """skimage's astronaut (512 x 512), top rows kept, centred on a gray canvas of `size` (BGR)."""
    from skimage import data
    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    width, height = size
    photo = photo[:height, :width]
    canvas = np.full((height, width, 3), 128, np.uint8)
    x0, y0 = (width - photo.shape[1]) // 2, (height - photo.shape[0]) // 2
    canvas[y0:y0 + photo.shape[0], x0:x0 + photo.shape[1]] = photo
    return canvas


def synthetic_clip(n_frames, max_shift=0.5, noise=3.0, velocity=(0.0, 0.0), seed=0, base=None):
    """Frames (BGR uint8) of a still photo moved by `velocity` px/frame plus random sub-pixel
    shifts (uniform in +-max_shift px per axis), with Gaussian sensor noise of std `noise`
    (0..255 scale); returns the frames and each frame's true (dx, dy) offset."""
    rng = np.random.default_rng(seed)
    base = astronaut_frame() if base is None else base
    height, width = base.shape[:2]
    offsets = rng.uniform(-max_shift, max_shift, (n_frames, 2)) + np.outer(np.arange(n_frames), velocity)
    frames = []
    for dx, dy in offsets:
        moved = cv2.warpAffine(base, np.float32([[1, 0, dx], [0, 1, dy]]), (width, height),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        noisy = moved.astype(np.float32) + rng.normal(0, noise, moved.shape).astype(np.float32)
        frames.append(np.clip(noisy, 0, 255).round().astype(np.uint8))
    return frames, offsets


def face_track(faces_per_frame, centre):
    """(N, 68, 2): in each frame the face whose box centre is nearest `centre` (NaN if none)."""
    out = np.full((len(faces_per_frame), 68, 2), np.nan)
    for i, faces in enumerate(faces_per_frame):
        if faces:
            distance = [np.linalg.norm(f.box[:2] + f.box[2:] / 2 - centre) for f in faces]
            out[i] = faces[int(np.argmin(distance))].keypoints
    return out


def run_clip(detector, frames, fps=30.0, tracking=True, smooth=True):
    """Keypoints of every frame: with tracking (FaceTracker), or detector + CNN on each frame alone."""
    tracker = FaceTracker(detector, fps=fps, smooth=smooth)
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    return [tracker(g) if tracking else detector.detect(g) for g in grays]


def keypoint_jitter(keypoints, offsets):
    """Pixel std per point (sqrt(var x + var y) over frames) after removing the known offset,
    averaged over points. Frames where the face was missed are left out."""
    residual = keypoints - np.asarray(offsets)[:, None, :]
    residual = residual[~np.isnan(residual).any(axis=(1, 2))]
    return float(np.sqrt(residual.var(axis=0).sum(-1)).mean())


def lag_along_motion(smoothed, raw, velocity):
    """Mean distance (px) by which smoothed keypoints trail the unsmoothed ones along the motion."""
    direction = np.asarray(velocity, dtype=np.float64) / np.linalg.norm(velocity)
    return float(np.nanmean((raw - smoothed) @ direction))


JITTER_CONFIGS = {"Haar + CNN per frame": dict(tracking=False, smooth=False),
                  "tracking, no smoothing": dict(tracking=True, smooth=False),
                  "tracking + One Euro": dict(tracking=True, smooth=True)}


def measure_jitter(model_path=DEFAULT_MODEL, n_frames=120, max_shift=0.5, noise=3.0, speeds=(1.0, 2.0),
                   seed=0, flip_average=False):
    """Keypoint jitter (px) of the video pipeline, per configuration (JITTER_CONFIGS), on two still
    clips: random sub-pixel shifts + noise, and noise only. Also the smoother's lag (px) on clips
    moving at `speeds` px/frame, and the spread of the shifts themselves (what a perfectly still
    output would score on the first clip)."""
    detector = KeypointDetector(model_path, flip_average=flip_average)
    gray = cv2.cvtColor(astronaut_frame(), cv2.COLOR_BGR2GRAY)
    # the face to follow, found with flip averaging so that the face check drops false detections
    faces = KeypointDetector(model_path).detect(gray)
    if not faces:
        raise SystemExit("jitter.py: no face found on the astronaut frame")
    face = max(faces, key=lambda f: f.box[2])
    box, reference = face.box, face.keypoints
    centre = box[:2] + box[2:] / 2
    eyes = float(np.linalg.norm(reference[36] - reference[45]))
    result = {"face": {"Haar box side (px)": float(box[2]), "outer-eye-corner distance (px)": eyes}}
    for clip, shift in ((f"sub-pixel shifts +-{max_shift:g} px + noise", max_shift), ("noise only", 0.0)):
        frames, offsets = synthetic_clip(n_frames, shift, noise, seed=seed)
        result[clip] = {}
        for name, config in JITTER_CONFIGS.items():
            keypoints = face_track(run_clip(detector, frames, **config), centre)
            result[clip][name] = keypoint_jitter(keypoints, offsets)
        result[clip]["still output (std of the shifts)"] = float(np.sqrt(offsets.var(axis=0).sum()))
    for speed in speeds:
        frames, offsets = synthetic_clip(n_frames, max_shift, noise, velocity=(speed, 0.0), seed=seed + 1)
        raw = face_track(run_clip(detector, frames, smooth=False), centre + offsets[0])
        smoothed = face_track(run_clip(detector, frames, smooth=True), centre + offsets[0])
        result[f"moving {speed:g} px/frame"] = {
            "tracking, no smoothing": keypoint_jitter(raw, offsets),
            "tracking + One Euro": keypoint_jitter(smoothed, offsets),
            "lag of the smoothed keypoints": lag_along_motion(smoothed, raw, (speed, 0.0))}
    return result


def main(argv=None):
    parser = OneLineParser(description="Keypoint jitter of detect.py on video.")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--frames", type=int, default=120, help="frames per synthetic clip")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--flip", action="store_true", help="jitter with flip averaging")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"keypoint jitter, px: std per point after removing the known shift, mean of 68 points; "
          f"{args.frames} frames per clip, sensor noise std 3, flip averaging {args.flip}:")
    for clip, values in measure_jitter(args.model, args.frames, flip_average=args.flip).items():
        print(f"  {clip}")
        for name, value in values.items():
            print(f"    {name:36s} {value:7.3f}")


if __name__ == "__main__":
    main()
