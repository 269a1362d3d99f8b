"""dlib's 68-point pipeline, the baseline bench.py measures ours against, and the per-point offset
that moves its points onto this data's labelling convention.

dlib's pipeline is its HOG frontal-face detector (upsample DLIB_UPSAMPLE), then the shape predictor
from the `face_recognition_models` package, on the RGB image as dlib documents it. It needs the
optional packages in requirements-bench.txt. Its model was trained on 300-W, whose labelling
convention is not this data's: fit_dlib_offsets measures the difference on training images.
"""

import importlib.util
import os

import numpy as np

from evaluate import matching_index, predict_dataset, subset_csv
from facial_keypoints.media import DataError, identity_of, read_keypoints_csv, unseen_people

INSTALL_HINT = "pip install -r requirements-bench.txt (or run `make bench`)"
DLIB_UPSAMPLE = 1  # dlib's documented setting: finds faces down to about 40 px


def dlib_model_path():
    """dlib's 68-point model as shipped by face_recognition_models. Found without importing the
    package: its __init__ needs pkg_resources, which recent setuptools no longer provides."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"face_recognition_models is not installed: {INSTALL_HINT}")
    path = os.path.join(spec.submodule_search_locations[0], "models", "shape_predictor_68_face_landmarks.dat")
    if not os.path.isfile(path):
        raise DataError(f"{path}: missing from the face_recognition_models package")
    return path


def rect_to_box(rect):
    """A dlib rectangle -> (x, y, w, h) floats, the layout of our detector's boxes."""
    return np.array([rect.left(), rect.top(), rect.width(), rect.height()], dtype=np.float64)


def shape_to_points(shape):
    """A dlib full_object_detection -> (68, 2) float array of x, y."""
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def matching_rect(rects, boxes, gt_keypoints):
    """The dlib rectangle of the labelled face (evaluate.matching_box's choice), or None."""
    index = matching_index(boxes, gt_keypoints)
    return None if index is None else rects[index]


class DlibPipeline:
    """dlib's HOG face detector, then its shape predictor on each face; `hog` and `predictor`
    can be stand-ins with the same call signatures (tests)."""

    def __init__(self, hog=None, predictor=None, upsample=DLIB_UPSAMPLE):
        if hog is None or predictor is None:
            try:
                import dlib
            except ImportError:
                raise DataError(f"dlib is not installed: {INSTALL_HINT}") from None
            hog = dlib.get_frontal_face_detector() if hog is None else hog
            predictor = dlib.shape_predictor(dlib_model_path()) if predictor is None else predictor
        self.hog, self.predictor, self.upsample = hog, predictor, upsample

    def find_faces(self, image):
        """dlib rectangles and the same faces as an (N, 4) array of x, y, w, h."""
        rects = list(self.hog(image, self.upsample))
        return rects, np.array([rect_to_box(r) for r in rects]).reshape(-1, 4)

    def keypoints(self, image, rect):
        return shape_to_points(self.predictor(image, rect))

    def detect(self, image):
        """Every face: a list of ((4,) box, (68, 2) keypoints), like KeypointDetector.detect."""
        rects, boxes = self.find_faces(image)
        return [(box, self.keypoints(image, rect)) for rect, box in zip(rects, boxes, strict=True)]

    def labelled_face(self, image, labels):
        """The keypoints of the labelled face, or None when the detector missed it: the pipeline
        evaluate.predict_dataset runs, with the detection chosen as for ours."""
        rect = matching_rect(*self.find_faces(image), labels)
        return None if rect is None else self.keypoints(image, rect)


def predict_with_dlib(pipeline, csv_file, images_dir, progress=True, rotate=0.0, degrade=None):
    """evaluate.predict_dataset with dlib's pipeline: (N, 68, 2) predictions, NaN for misses, and
    the labels."""
    return predict_dataset(pipeline.labelled_face, csv_file, images_dir, progress, rotate, degrade,
                           label="evaluate (dlib)")


# ---------------------------------------------------------------------------------------------
# The per-point offset: dlib's points moved onto this data's labelling convention.

def face_frame(points):
    """A face's own frame from its (68, 2) points: origin the midpoint of the eye centres (means of
    points 36-41 and 42-47), x axis from the first eye centre to the second, unit length their
    distance. Returns (origin, rotation, scale); rotation's columns are the frame's x and y axes in
    image coordinates, so image point = origin + scale * rotation @ frame point."""
    first, second = points[36:42].mean(0), points[42:48].mean(0)
    scale = float(np.linalg.norm(second - first))
    cos, sin = (second - first) / scale
    return (first + second) / 2, np.array([[cos, -sin], [sin, cos]]), scale


def fit_point_offsets(predicted_list, labels_list):
    """The mean residual (label - predicted) of each point in each predicted face's own frame
    (face_frame of the prediction, never of the label): a (68, 2) offset for apply_point_offsets."""
    residuals = []
    for predicted, labels in zip(predicted_list, labels_list, strict=True):
        _, rotation, scale = face_frame(predicted)
        residuals.append((labels - predicted) @ rotation / scale)  # each row: rotation.T @ r / scale
    return np.mean(residuals, axis=0)


def apply_point_offsets(points, offsets):
    """(68, 2) points plus `offsets` (frame units) mapped through the points' own face_frame; a
    miss (NaN points) stays NaN."""
    _, rotation, scale = face_frame(points)
    return points + scale * offsets @ rotation.T


def fit_dlib_offsets(pipeline, csv_file, images_dir, n_images, folder):
    """fit_point_offsets on dlib's faces in `n_images` evenly spaced rows of a labelled CSV
    (evaluate.subset_csv, spaced), leaving out the people of the unseen-people split, on whom both
    pipelines are scored: (offsets, {"images", "step", "found"})."""
    seen = os.path.join(folder, "seen_" + os.path.basename(csv_file))
    frame = read_keypoints_csv(csv_file)
    frame = frame[~frame.iloc[:, 0].map(identity_of).isin(unseen_people())]
    frame.to_csv(seen, index=False)
    subset = subset_csv(seen, n_images, folder, spaced=True)
    pred, gt = predict_with_dlib(pipeline, subset, images_dir)
    found = ~np.isnan(pred).any(axis=(1, 2))
    if not found.any():
        raise DataError(f"dlib found none of the {len(gt)} faces in {subset}: no offset to fit")
    step = max(1, len(frame) // n_images)
    return fit_point_offsets(pred[found], gt[found]), {"images": len(gt), "step": step,
                                                       "found": int(found.sum())}
