"""Faces through a video: tracked from frame to frame, their keypoints smoothed.

    tracker = FaceTracker(KeypointDetector(), fps=30)
    for frame in video:
        faces = tracker(frame)        # [Face(box, keypoints, track_id)], like KeypointDetector.detect

The face detector runs every few frames only; in between, each face's crop comes from its keypoints
in the previous frame, and a One Euro filter per face removes the frame-to-frame jitter.
"""

from dataclasses import dataclass

import numpy as np

from . import media
from .face_crop import angle_between, box_iou, box_moved, upright_box
from .media import Face


class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) for an (N, 2) array of points.

    An exponential low-pass filter whose cutoff frequency rises with speed: a face at rest gets
    strong smoothing (no jitter), a moving face a high cutoff (little lag). Speeds are measured in
    face sizes per second (`scale` = the face's size in pixels), so one setting fits any face size.
    The defaults come from `python jitter.py`: among the settings tried, the least jitter on a
    still face with a lag under half a pixel for a face moving 2 px per frame.
    """

    def __init__(self, min_cutoff=1.0, beta=40.0, d_cutoff=1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.x = self.speed = None

    @staticmethod
    def alpha(cutoff, dt):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x, dt, scale=1.0):
        x = np.asarray(x, dtype=np.float64)
        if self.x is None:
            self.x, self.speed = x, np.zeros(len(x))
            return x
        speed = np.linalg.norm(x - self.x, axis=-1) / (dt * scale)
        a_d = self.alpha(self.d_cutoff, dt)
        self.speed = a_d * speed + (1 - a_d) * self.speed
        a = self.alpha(self.min_cutoff + self.beta * self.speed, dt)[:, None]
        self.x = a * x + (1 - a) * self.x
        return self.x


@dataclass
class Track:
    id: int
    box: np.ndarray          # where to crop this face in the next frame
    smoother: OneEuroFilter
    angle: float = 0.0       # and how far to turn that crop (degrees; face_crop.upright_box)
    missed: int = 0          # detection rounds in a row that did not find this face


class FaceTracker:
    """Faces through a video: call it on each frame (gray or RGB uint8), get a list of Face.

    The face detector runs every `detect_every` frames, or on the next frame when a face moved so
    far that its crop may have lost it; its boxes are matched to the tracks by overlap (IoU). In
    between, a face's crop comes from its keypoints in the previous frame (face_crop.upright_box:
    the box the Haar cascade would draw there, turned with the face's roll), which costs nothing
    and jitters less than the detector's own. A track the detector misses in `max_missed` detection
    rounds in a row is dropped, and so is one whose crop fails the detector's face check
    (KeypointDetector.max_disagreement). With `smooth`, each track's keypoints go through a One
    Euro filter.

    A track's crop only moves when the face moved by at least `hold` (a fraction of the box side)
    in position or size, or turned by `hold_angle` degrees. Re-cropping at every sub-pixel wobble
    feeds the network's noise back into the next crop: the keypoints of a still face then wander
    slowly, a drift no low-pass filter removes (`python jitter.py --flip` measures it).
    """

    def __init__(self, detector, fps=30.0, detect_every=10, smooth=True, min_cutoff=1.0, beta=40.0,
                 iou_threshold=0.3, max_missed=2, moved_iou=0.5, hold=0.01, hold_angle=1.0):
        self.detector, self.dt = detector, 1.0 / (fps if fps and fps > 0 else 30.0)
        self.detect_every, self.smooth = max(1, detect_every), smooth
        self.filter_args = dict(min_cutoff=min_cutoff, beta=beta)
        self.iou_threshold, self.max_missed, self.moved_iou = iou_threshold, max_missed, moved_iou
        self.hold, self.hold_angle = hold, hold_angle
        self.tracks, self.frame_index, self.next_id, self.detect_next = [], 0, 0, True
        self.rounds = 0  # detection rounds so far

    def match_detections(self, gray, boxes, angles, keypoints=None):
        """Greedy IoU matching of detections to tracks; unmatched detections start new tracks.
        `keypoints`: the detections' keypoints if the detector gave them (find_faces)."""
        iou = box_iou([t.box for t in self.tracks], boxes) if self.tracks else np.zeros((0, len(boxes)))
        matched_tracks, matched_boxes = set(), set()
        for flat in np.argsort(-iou, axis=None):
            i, j = np.unravel_index(flat, iou.shape)
            if iou[i, j] < self.iou_threshold:
                break
            if i not in matched_tracks and j not in matched_boxes:
                matched_tracks.add(i)
                matched_boxes.add(j)
        for i, track in enumerate(self.tracks):
            track.missed = 0 if i in matched_tracks else track.missed + 1
        self.tracks = [t for t in self.tracks if t.missed < self.max_missed]
        new = [j for j in range(len(boxes)) if j not in matched_boxes]
        # A new face starts from the crop its first keypoints imply, the crop it is tracked with
        # later: without this the first frames of a track drift by a pixel or two.
        points = (keypoints[new] if keypoints is not None else
                  self.detector.keypoints_for_boxes(gray, boxes[new], angles[new], refine=False))
        points = points[self.detector.passed_check(points)]  # keypoints_for_boxes checked them
        for box, angle in zip(*self.detector.next_crops(points), strict=True):
            self.tracks.append(Track(self.next_id, box, OneEuroFilter(**self.filter_args), angle))
            self.next_id += 1

    def __call__(self, frame):
        gray = media.to_gray(frame)
        if self.detect_next or self.frame_index % self.detect_every == 0:
            self.match_detections(gray, *self.detector.find_faces(gray, self.rotations_now()))
        self.frame_index, self.detect_next = self.frame_index + 1, False
        keypoints = self.detector.keypoints_for_boxes(gray, [t.box for t in self.tracks],
                                                      [t.angle for t in self.tracks], refine=False)
        # A crop that fails the face check (a false detection, or a face that left its crop) ends
        # its track; the next detection round starts it again if the face is still there.
        kept = self.detector.passed_check(keypoints)
        self.tracks, keypoints = [t for t, k in zip(self.tracks, kept, strict=True) if k], keypoints[kept]
        faces = []
        for track, points in zip(self.tracks, keypoints, strict=True):
            box, angle = upright_box(points, self.detector.max_roll)
            self.detect_next |= box_iou(track.box, box)[0, 0] < self.moved_iou
            if self.smooth:
                points = track.smoother(points, self.dt, scale=box[2])
                box, angle = upright_box(points, self.detector.max_roll)
            if box_moved(track.box, box) >= self.hold or abs(angle - track.angle) >= self.hold_angle:
                track.box, track.angle = box, angle
            faces.append(Face(box, points, track.id))
        self.drop_duplicates()
        return faces

    def rotations_now(self):
        """The turned copies this detection round searches: the one nearest to each tilted track,
        so the cascade can confirm it, and one more in turn, so a new tilted face is found within
        a few rounds. A round then searches one or two turned copies, not four; BlazeFace, which
        has no turned copies, none."""
        rotations = tuple(self.detector.face_detector.rotations)
        if not rotations:
            return ()
        wanted = {rotations[self.rounds % len(rotations)]}
        for track in self.tracks:
            nearest = min(rotations, key=lambda r: abs(angle_between(r, track.angle)))  # noqa: B023
            if abs(angle_between(nearest, track.angle)) < abs(angle_between(0.0, track.angle)):
                wanted.add(nearest)
        self.rounds += 1
        return tuple(sorted(wanted))

    def drop_duplicates(self):
        """Two tracks that converged on the same face: keep the older one."""
        keep = []
        for track in self.tracks:  # oldest first
            if track.box[2] < 8 or not np.isfinite(track.box).all():  # collapsed on a non-face
                continue
            if all(box_iou(track.box, k.box)[0, 0] < 0.5 for k in keep):
                keep.append(track)
        self.tracks = keep
