"""Find every face in an image or video and predict its 68 keypoints.

    python detect.py                                  # scikit-image's astronaut -> outputs/astronaut.jpg
    python detect.py photo.jpg photos/ clip.mp4 --json keypoints.jsonl
    python detect.py --camera 0 --out outputs/
    python detect.py photos/ --workers 2 --json k.jsonl   # two processes for the folder's images
    python detect.py photo.jpg --backend torch        # PyTorch instead of onnxruntime
    python detect.py photo.jpg --accurate             # more forward passes per face: slower, fewer misreads
    python detect.py photo.jpg --convention course    # the course's labelling (default: 300-W's)
    python detect.py photo.jpg --face-detector haar   # the course's Haar cascade instead of BlazeFace

As a library:

    detector = KeypointDetector()          # loads the shipped model and the face detector, once
    detector = KeypointDetector(backend="torch")   # force PyTorch (default "auto": onnxruntime when
                                                   # installed and its export matches the .pt)
    detector = KeypointDetector(convention="course")   # the course head (default: "300w" when the
                                                       # model has one, else its only convention)
    faces = detector.detect(rgb_image)     # [Face(box=(x, y, w, h), keypoints=(68, 2))], image pixels
    tracker = FaceTracker(detector, fps=30)        # tracking.py: the same, per video frame

Faces come from BlazeFace (blazeface.py, a small learned detector that also gives each face's
roll) or, with `--face-detector haar`, from OpenCV's frontal-face Haar cascade, the course's
detector, which finds a tilted head in a turned copy of the image. Each box becomes the same crop
the network was trained on (face_crop.crop_matrix), turned so that the network sees the face
upright; all faces of an image go through the CNN as one batch (backends.py: PyTorch or
onnxruntime), and the keypoints are mapped back to image pixels. Videos are tracked
(tracking.py); files in are media.py's job, files out outputs.py's.
"""

import os
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from functools import partial

import cv2
import numpy as np

from . import media, runner
from .backends import load_backend, predict_both_ways, predict_normalized
from .blazeface import BLAZEFACE_MODEL, BlazeFace
from .face_crop import (
    box_for_crop_centre,
    box_iou,
    crop_centre,
    crop_matrix,
    denormalize_keypoints,
    invert_matrix,
    transform_points,
    turn_beyond,
    upright_box,
    warp_face,
)
from .media import Face, OneLineParser

# rank_by_symmetry: how much one unit of the cascade's level weight counts against the network's
# flip disagreement (normalised coordinates). A tie-break, chosen on the validation people turned by
# up to 45 degrees: NME hardly depends on it; this value had the fewest failures (docs/EXPERIMENTS.md).
WEIGHT_SHARE = 0.002
# The face check: on a face, the network reads a crop and its mirror image alike; on what is no
# face (an ear, a collar, a tie, a head seen side-on) the two readings disagree. The limit is the
# mean |difference| in normalised crop coordinates (1 = half the crop side). Chosen on the shipped
# model's validation people, turned and degraded, read by either head: about as few other
# detections kept as with the model before it (a model trained on blurred and noisy crops reads
# more non-faces consistently, so its limit is tighter); of the limits that do, the tighter
# (docs/EXPERIMENTS.md).
MAX_FLIP_DISAGREEMENT = 0.04
# With `accurate`, the last crop of each face is cut five times, moved by these fractions of the box
# side (x, y): the network's error differs a little from crop to crop, and the mean of five readings
# is a little better than one, for four more flip-averaged passes per face (docs/EXPERIMENTS.md).
# The first, unmoved crop is the one the face check reads.
CROP_SHIFTS = ((0.0, 0.0), (0.03, 0.0), (-0.03, 0.0), (0.0, 0.03), (0.0, -0.03))
HAAR_CASCADE = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")


class FaceDetectorBase:
    """What both face detectors share: `candidates(gray, rotations)` gives every detection as
    (weight, box, angle), and `find` keeps one per face (kept_of). A box that covers more than
    `overlap` of a surer one (or of itself) is dropped as the same face (two real faces
    overlapping that much lose one). `find` gives each face's box and the angle its crop is turned
    by (its rough roll); `__call__` gives the boxes alone. `rotations` are the turned copies of the
    image the detector searches (the video tracker searches a few per frame)."""

    rotations, overlap, upright_bonus = (), 0.3, 0.0
    check_first_below = None  # KeypointDetector.check_unsure: a weight below this is checked twice

    def find(self, gray, rotations=None):
        """(boxes (N, 4) x, y, w, h in image pixels, angles (N,) in degrees); `rotations`
        overrides self.rotations for this call (the video tracker turns fewer copies per frame)."""
        return self.merge(self.candidates(gray, rotations))

    def candidates(self, gray, rotations=None):
        raise NotImplementedError

    def merge(self, found, upright_bonus=None):
        """(boxes, angles) of the detections kept_of(found) keeps."""
        return boxes_and_angles(found, self.kept_of(found, upright_bonus))

    def kept_of(self, found, upright_bonus=None):
        """The indices of one detection per face, in the detector's order. Surest first (an upright
        one gets `upright_bonus`), a box that covers `overlap` of a surer one (or of itself) is the
        same face found again, or part of it, and is dropped, unless it is more than twice as large
        (a face around a false detection on part of it, which then goes instead)."""
        bonus = self.upright_bonus if upright_bonus is None else upright_bonus
        kept = []  # indices into found
        for i in sorted(range(len(found)), key=lambda i: -found[i][0] - bonus * (found[i][2] == 0)):
            box = found[i][1]
            overlapping = [k for k in kept if box_iou(box, found[k][1], over="smaller")[0, 0] >= self.overlap]
            if not overlapping:
                kept.append(i)
            elif all(box[2] > 2.0 * found[k][1][2] for k in overlapping):
                kept = [k for k in kept if k not in overlapping] + [i]
        return sorted(kept)

    def __call__(self, gray):
        return self.find(gray)[0]


class FaceDetector(FaceDetectorBase):
    """OpenCV's Haar frontal-face cascade, for faces at any roll up to about 60 degrees. Images
    larger than `max_side` are downscaled for detection only; boxes come back in original pixels.

    The cascade knows upright faces only, so it also runs on copies of the image turned by each of
    `rotations` degrees: a tilted head is upright in one of them. In an image whose long side is
    at least `half_from` pixels (HALF_RES_FROM; None: never) the turned copies are searched at half
    resolution, a fraction of the work each (HALF_RES_SEARCH); there a tilted face below about
    48 pixels is found only when upright, and small tilted faces are missed more often.
    A face found in several copies is kept where the cascade was surest of it (its level weight,
    an upright one gets `upright_bonus`; KeypointDetector.find_faces asks the network instead),
    and its angle is that of the copy it was found in (its crop is turned by that angle). When no
    copy has a face, a more sensitive upright pass (`retry`: finer scale steps, fewer neighbours)
    runs before giving up. The course's detector (Notebooks 1 and 3), and `--face-detector haar`.
    """

    ROTATIONS = (-22.5, 22.5, -45.0, 45.0)  # the cascade finds faces within ~15 degrees of upright
    # The turned copies at half resolution: a quarter of the pixels, where the cascade needs one
    # neighbour (scale factor, min neighbours) to find most tilted faces. Not below HALF_RES_FROM
    # pixels (the long side): there the faces are small, near the cascade's 24-pixel window at
    # half resolution, and many were missed. Chosen on the validation people (docs/EXPERIMENTS.md).
    HALF_RES_SEARCH = (1.2, 1)
    HALF_RES_FROM = 640

    def __init__(self, scale_factor=1.2, min_neighbors=2, min_size=30, max_side=1024,
                 cascade=HAAR_CASCADE, retry=(1.05, 1), rotations=ROTATIONS, overlap=0.3,
                 upright_bonus=1.0, half_from=HALF_RES_FROM):
        self.cascade = cv2.CascadeClassifier(cascade)
        if self.cascade.empty():
            raise RuntimeError(f"{cascade}: could not load the Haar cascade")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.min_size, self.max_side, self.retry, self.rotations = min_size, max_side, retry, rotations
        self.overlap, self.upright_bonus, self.half_from = overlap, upright_bonus, half_from

    def candidates(self, gray, rotations=None):
        """Every detection in every turned copy, before merging: a list of (weight, box, angle)."""
        scale = min(1.0, self.max_side / max(gray.shape[:2]))
        small = gray if scale == 1 else cv2.resize(gray, None, fx=scale, fy=scale,
                                                   interpolation=cv2.INTER_AREA)
        min_size = (max(1, int(round(self.min_size * scale))),) * 2
        found = self.find_turned(small, 0.0, self.scale_factor, self.min_neighbors, min_size)
        rotations = self.rotations if rotations is None else rotations
        if len(rotations):
            reduced, shrink, search = self.turned_search(small, min_size)
            for angle in rotations:
                found += [(weight, centre / shrink, side / shrink, angle)
                          for weight, centre, side, angle in self.find_turned(reduced, angle, *search)]
        if not found and self.retry:
            boxes = self.cascade.detectMultiScale(small, *self.retry, minSize=min_size)
            found = [(0.0, crop_centre(box), float(box[2]), 0.0) for box in boxes]
        return [(weight, box_for_crop_centre(centre / scale, side / scale), angle)
                for weight, centre, side, angle in found]

    def turned_search(self, gray, min_size):
        """(image, its scale, cascade settings) for the turned copies: half resolution from
        half_from pixels on, else the upright pass's own."""
        if self.half_from is None or max(gray.shape[:2]) < self.half_from:
            return gray, 1.0, (self.scale_factor, self.min_neighbors, min_size)
        half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        return half, 0.5, (*self.HALF_RES_SEARCH, (max(1, int(round(min_size[0] * 0.5))),) * 2)

    def find_turned(self, gray, angle, scale_factor, min_neighbors, min_size):
        """The cascade on the image turned by `angle` degrees: a list of (weight, crop centre in
        image pixels, side, angle) per face."""
        turn = None
        if angle:
            h, w = gray.shape[:2]
            turn = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), angle, 1.0)
            gray = cv2.warpAffine(gray, turn, (w, h), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        boxes, _, weights = self.cascade.detectMultiScale3(gray, scale_factor, min_neighbors,
                                                           minSize=min_size, outputRejectLevels=True)
        faces = []
        for box, weight in zip(boxes, np.ravel(weights), strict=True):
            centre = crop_centre(box)
            if turn is not None:
                centre = transform_points(centre[None], invert_matrix(turn))[0]
            faces.append((float(weight), centre, float(box[2]), float(angle)))
        return faces


class BlazeFaceDetector(FaceDetectorBase):
    """The default face detector: BlazeFace (blazeface.py), a small network that finds faces
    rolled up to about 60 degrees in one pass over an image pyramid and reads each face's roll
    from its eye line (past that it finds many still, at a wrong roll), so no turned copies are
    searched: `rotations` is empty. A face's crop is turned by its roll beyond +-`max_roll`
    degrees (the rule face_crop.upright_box follows). `min_size` (the Haar box's side, pixels) is
    the smallest face the pyramid searches for; it finds some smaller faces too, and keeps them."""

    # Detections scored below this must pass the face check on their first crop too
    # (KeypointDetector.check_unsure): on the validation people most of BlazeFace's false
    # detections that passed the check scored below it; a higher value dropped more faces the
    # network read well, a lower one kept more false detections (docs/EXPERIMENTS.md).
    check_first_below = 0.6

    def __init__(self, min_size=30, model_path=BLAZEFACE_MODEL, max_roll=5.0):
        self.network, self.max_roll = BlazeFace(model_path, min_size), max_roll

    def candidates(self, gray, rotations=None):
        """Every face BlazeFace found, as (score, box, angle); `rotations` is ignored: the network
        finds tilted faces itself."""
        scores, boxes, rolls = self.network(gray)
        angles = turn_beyond(rolls, self.max_roll)
        return [(float(s), box, float(a)) for s, box, a in zip(scores, boxes, angles, strict=True)]


def flip_disagreement(direct, mirrored):
    """(N,) how differently the network read each crop and its mirror image (predict_both_ways):
    the mean |difference| of their keypoints, in normalised crop coordinates. The symmetry
    ranking and the face check both read it."""
    return np.abs(direct - mirrored).mean(axis=(1, 2))


def boxes_and_angles(found, kept):
    """(boxes (N, 4), angles (N,)) arrays of the detections found[k] for k in kept."""
    return (np.array([found[k][1] for k in kept], dtype=np.float64).reshape(-1, 4),
            np.array([found[k][2] for k in kept], dtype=np.float64))


# ---------------------------------------------------------------------------------------------
# The pipeline: faces, crops, network, keypoints in image pixels.

@contextmanager
def stopwatch(seconds, stage):
    """Add the time spent in the block to seconds[stage]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] += time.perf_counter() - start


class KeypointDetector:
    """Faces -> crops -> keypoints, with the model (backends.load_backend: "auto", "torch" for a
    .pt or "onnx" for a .onnx; default: the shipped one) and the face detector loaded once. With
    `refine`, each face is cropped once more, from the box its first keypoints imply
    (face_crop.upright_box), and predicted again: a crop centred on the face whatever the
    detector's box, and turned so that the eyes are within `max_roll` degrees of level: three
    forward passes per face with flip averaging (without refine, as the video tracker runs it,
    each box is read once). `accurate` adds a middle refine crop and reads the last crop at each of
    CROP_SHIFTS, averaging the readings: twelve passes, fewer badly read faces. With
    flip averaging, the last pass also checks that each crop shows a face
    (`max_disagreement`, MAX_FLIP_DISAGREEMENT; None: no check): a detection that fails the check
    gets NaN keypoints from keypoints_for_boxes and is left out by `detect`. `seconds` adds up the
    time per stage (detection, crop, cnn) for benchmarks.

    `convention` names the labelling whose head is read, one of the model's `conventions`
    (backends.use_convention; None: "300w" when the model has that head, else its only one); a
    head the model lacks is a backends.ConventionError. Every pass, the face check's too, reads
    that head alone: its mirror-image reading is mapped back in the same iBUG order."""

    def __init__(self, model_path=None, face_detector=None, flip_average=True, refine=True,
                 backend="auto", max_roll=5.0, max_disagreement=MAX_FLIP_DISAGREEMENT, accurate=False,
                 convention=None):
        self.backend = load_backend(backend, model_path, convention)
        self.backend_name, self.backend_path = self.backend.name, self.backend.path
        self.model, self.meta = self.backend.model, self.backend.meta
        self.size = self.meta["input_size"]
        self.margin, self.shift = self.meta["crop_margin"], self.meta["crop_shift"]
        self.face_detector = face_detector or BlazeFaceDetector()
        self.flip_average, self.refine, self.max_roll = flip_average, refine, max_roll
        self.max_disagreement, self.accurate = max_disagreement, accurate
        self.seconds = defaultdict(float)

    @property
    def conventions(self):
        """The model's labelling conventions, in its output's order (backends.model_conventions)."""
        return self.backend.conventions

    @property
    def convention(self):
        """The convention whose head this detector reads (backends.use_convention changes it)."""
        return self.backend.convention

    def crops(self, gray, boxes, angles=None):
        """The network's input for each box, its crop turned by `angles` (degrees, default 0):
        (N, 1, S, S) float32 array in [0, 1] (the training crops' gray / 255) and the (N, 2, 3)
        crop matrices."""
        angles = np.zeros(len(boxes)) if angles is None else angles
        matrices = [crop_matrix(b, self.size, self.margin, self.shift, angle=a)
                    for b, a in zip(boxes, angles, strict=True)]
        crops = np.stack([warp_face(gray, m, self.size) for m in matrices])
        return (crops.astype(np.float32) / np.float32(255.0))[:, None], matrices

    def keypoints_for_boxes(self, image, boxes, angles=None, refine=None, first=None, check=True):
        """(N, 68, 2) keypoints in image pixels for the given face boxes, crops turned by `angles`.
        Without refine (which defaults to self.refine) one CNN pass on those crops. With it, each
        face is cropped again from the box its first keypoints imply, turned upright
        (face_crop.upright_box): a crop centred on the face whatever the detector's box or angle,
        the one a video track would cut next, read flip-averaged; it makes the face check. The
        first pass only places that crop, so it is read one way. `first`, keypoints already
        predicted on the first crops (find_faces), replaces the first pass. With `accurate`, a
        middle crop placed the same way comes between them (it helps when the detector's box or
        angle was far off) and the last crop is read at each of CROP_SHIFTS. With `check` (False
        where a face is known to be there, as in evaluate.py's labelled-box protocol) the last
        pass makes the face check: a crop that shows no face the network can read gets NaN
        keypoints (see the class docstring)."""
        gray = media.to_gray(image)
        if not (self.refine if refine is None else refine):
            return self.predict_boxes(gray, boxes, angles, check=check)
        keypoints = self.predict_boxes(gray, boxes, angles, flip_average=False) if first is None else first
        if len(keypoints) == 0:
            return keypoints
        if self.accurate:
            keypoints = self.predict_boxes(gray, *self.next_crops(keypoints), flip_average=False)
        last_boxes, last_angles = self.next_crops(keypoints)
        shifts = CROP_SHIFTS if self.accurate else None
        return self.predict_boxes(gray, last_boxes, last_angles, check=check, shifts=shifts)

    @staticmethod
    def passed_check(keypoints):
        """(N,) bool: which faces of keypoints_for_boxes' (N, 68, 2) result passed the face check
        (the others' keypoints are NaN)."""
        return np.isfinite(keypoints).all(axis=(1, 2))

    def next_crops(self, keypoints):
        """(boxes, angles) of the crops these keypoints imply: the refine pass, the next video frame."""
        crops = [upright_box(k, self.max_roll) for k in keypoints]
        return [b for b, _ in crops], [a for _, a in crops]

    def predict_boxes(self, gray, boxes, angles=None, flip_average=None, check=False, shifts=None):
        """One pass: crops of a gray image -> CNN -> (N, 68, 2) keypoints in image pixels. With
        `shifts` ((x, y) fractions of the box side, CROP_SHIFTS), each box is cropped once per
        shift and its keypoints are the mean of those crops' (in image pixels). With `check` and
        flip averaging, a crop whose mirror image the network reads differently (by more than
        max_disagreement) shows no face: its keypoints are NaN (the first shift's crop decides)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, 68, 2))
        shifts = np.zeros((1, 2)) if shifts is None or len(shifts) == 0 else np.reshape(shifts, (-1, 2))
        n, s = len(boxes), len(shifts)
        angles = np.zeros(n) if angles is None else np.asarray(angles, dtype=np.float64)
        moved = np.repeat(boxes, s, axis=0)  # face i's crops are rows i * s .. i * s + s - 1
        moved[:, :2] += np.tile(shifts, (n, 1)) * moved[:, 2:]
        with stopwatch(self.seconds, "crop"):
            crops, matrices = self.crops(gray, moved, np.repeat(angles, s))
        flip = self.flip_average if flip_average is None else flip_average
        with stopwatch(self.seconds, "cnn"):
            if flip:
                direct, mirrored = predict_both_ways(self.backend, crops)
                pred = (direct + mirrored) / 2
            else:
                pred = predict_normalized(self.backend, crops)
        keypoints = self.to_image(pred, matrices).reshape(n, s, -1, 2).mean(axis=1)
        if flip and check and self.max_disagreement is not None:
            disagreement = flip_disagreement(direct, mirrored).reshape(n, s)[:, 0]
            keypoints[disagreement > self.max_disagreement] = np.nan
        return keypoints

    def to_image(self, pred, matrices):
        """(N, 68, 2) normalised crop coordinates -> image pixels, through each crop's matrix."""
        pred = denormalize_keypoints(pred, self.size)
        return np.stack([transform_points(p, invert_matrix(m)) for p, m in zip(pred, matrices, strict=True)])

    def find_faces(self, gray, rotations=None):
        """(boxes (N, 4), angles (N,), keypoints (N, 68, 2) or None) of the faces in a gray image
        (the face detector's find, timed as the detection stage). When the Haar cascade's turned
        copies found faces, the same face found at several angles is kept at the angle where the
        network sees it best (rank_by_symmetry), and the flip-averaged keypoints the network gave
        each kept crop come too (keypoints_for_boxes' first pass; None when no first pass ran).
        BlazeFace finds each face once, at its own roll: nothing to rank; but a detection it is
        unsure of (check_first_below) must pass the face check on its first crop too
        (check_unsure), where most of its false detections fail."""
        with stopwatch(self.seconds, "detection"):
            found = self.face_detector.candidates(gray, rotations)
        searched = self.face_detector.rotations if rotations is None else rotations
        turned = len(searched) > 0 and any(angle for *_, angle in found)
        if len(found) < 2 or not turned:
            return self.check_unsure(gray, found)
        scored, keypoints = self.rank_by_symmetry(gray, found)
        kept = self.face_detector.kept_of(scored, upright_bonus=0.0)
        return *boxes_and_angles(scored, kept), keypoints[kept]

    def check_unsure(self, gray, found):
        """(boxes, angles, keypoints or None) of the detections kept_of(found) keeps, less those the
        detector is unsure of (weight below its check_first_below) whose first crop fails the face
        check; the first crops' flip-averaged keypoints come too when they were read."""
        kept = self.face_detector.kept_of(found)
        boxes, angles = boxes_and_angles(found, kept)
        below = self.face_detector.check_first_below
        no_check = not self.flip_average or self.max_disagreement is None  # as the last pass's check
        unsure = np.array([below is not None and found[k][0] < below for k in kept], dtype=bool)
        if no_check or not unsure.any():
            return boxes, angles, None
        disagreement, keypoints = self.read_both_ways(gray, boxes, angles)
        passed = ~unsure | (disagreement <= self.max_disagreement)
        return boxes[passed], angles[passed], keypoints[passed]

    def read_both_ways(self, gray, boxes, angles):
        """(flip disagreement (N,), flip-averaged keypoints (N, 68, 2) in image pixels) of one pass
        on the crops of these boxes."""
        with stopwatch(self.seconds, "crop"):
            crops, matrices = self.crops(gray, boxes, angles)
        with stopwatch(self.seconds, "cnn"):
            direct, mirrored = predict_both_ways(self.backend, crops)
        return flip_disagreement(direct, mirrored), self.to_image((direct + mirrored) / 2, matrices)

    def rank_by_symmetry(self, gray, found):
        """The detections scored by how closely the network's keypoints for the crop and for its
        mirror image agree (their mean difference, negated: higher is better), with a little of the
        cascade's weight (WEIGHT_SHARE) to break near ties, and the flip-averaged keypoints of
        each (image pixels). On a face the crop shows upright they agree closely; on a face
        turned the wrong way by its copy they do not, and the cascade's weight cannot tell these
        apart."""
        disagreement, keypoints = self.read_both_ways(gray, [box for _, box, _ in found],
                                                      [angle for *_, angle in found])
        scored = [(WEIGHT_SHARE * weight - float(d), box, angle)
                  for d, (weight, box, angle) in zip(disagreement, found, strict=True)]
        return scored, keypoints

    def detect(self, image):
        """Every face in an RGB (or gray) uint8 image: a list of Face, in image pixels (without
        the detections that fail the face check)."""
        gray = media.to_gray(image)
        boxes, angles, first = self.find_faces(gray)
        keypoints = self.keypoints_for_boxes(gray, boxes, angles, first=first)
        passed = self.passed_check(keypoints)
        return [Face(b, k) for b, k in zip(boxes[passed], keypoints[passed], strict=True)]


# ---------------------------------------------------------------------------------------------
# The command line (runner.py: the loop over inputs it shares with filters.py).

def command_name():
    """How the user started this command line, for its error lines: the installed command
    (facial-keypoints), `python -m facial_keypoints`, or detect.py from a clone (or a library call)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name == "facial_keypoints.__main__":
        return "python -m facial_keypoints"
    if os.path.splitext(os.path.basename(sys.argv[0] if sys.argv else ""))[0] == "facial-keypoints":
        return "facial-keypoints"
    return "detect.py"


def parse_args(argv=None):
    parser = OneLineParser(
        prog=command_name(),
        description="Find faces and their 68 keypoints in images, folders of images and videos.")
    runner.add_input_options(parser, detect_every=10)
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write JSON Lines: one object per image or video frame, naming its convention")
    parser.add_argument("--scale-factor", type=float, default=None,
                        help="Haar cascade scale step (--face-detector haar; default 1.2)")
    parser.add_argument("--min-neighbors", type=int, default=None,
                        help="Haar cascade minNeighbors (--face-detector haar; default 2)")
    parser.add_argument("--min-size", type=int, default=30,
                        help="smallest face searched for, in pixels (BlazeFace finds some smaller ones too)")
    parser.add_argument("--accurate", action="store_true",
                        help="read each face with more forward passes (a middle refine crop, the last "
                             "crop at five small shifts): slower, fewer badly read faces")
    parser.add_argument("--no-flip", action="store_true",
                        help="no flip averaging (faster, a bit less accurate; no face check either, "
                             "so more false faces)")
    args = parser.parse_args(argv)
    runner.check_input_options(parser, args)
    haar_values = (("--scale-factor", args.scale_factor), ("--min-neighbors", args.min_neighbors))
    haar_options = [option for option, value in haar_values if value is not None]
    if haar_options and args.face_detector != "haar":
        parser.error(f"{' and '.join(haar_options)}: for --face-detector haar (BlazeFace has no such "
                     "setting)")
    if args.scale_factor is not None and not (1 < args.scale_factor < 10):  # also refuses nan
        parser.error(f"--scale-factor {args.scale_factor}: must be a number above 1 (e.g. 1.1 or 1.2)")
    if (args.min_neighbors is not None and args.min_neighbors < 0) or args.min_size < 1:
        parser.error("--min-neighbors must be >= 0 and --min-size >= 1")
    return args


def face_detector_for(name, upright_only=False, min_size=30, **cascade_options):
    """The face detector runner's --face-detector names: "blazeface" or "haar", with its options
    (FaceDetector's scale_factor and min_neighbors; None, or not given: the cascade's default)."""
    if name == "blazeface":
        return BlazeFaceDetector(min_size)
    given = {option: value for option, value in cascade_options.items() if value is not None}
    return FaceDetector(min_size=min_size, rotations=() if upright_only else FaceDetector.ROTATIONS, **given)


def build_detector(args):
    """The detector the command-line options ask for (a module-level function: each --workers
    process builds its own from the same options)."""
    face_detector = face_detector_for(args.face_detector, args.upright_only, args.min_size,
                                      scale_factor=args.scale_factor, min_neighbors=args.min_neighbors)
    return KeypointDetector(args.model, face_detector, flip_average=not args.no_flip, backend=args.backend,
                            accurate=args.accurate, convention=args.convention)


def main(argv=None):
    """Run the command line; returns the exit status (1 if any input failed)."""
    args = parse_args(argv)
    return runner.run(args, partial(build_detector, args),
                      runner.Action(media.draw_faces, program=command_name()), json_path=args.json)


if __name__ == "__main__":
    sys.exit(main())
