"""Label unlabelled face photos with a teacher, as 300-W-layout faces for get_data.py --pts.

    python pseudo_label.py ../shared/lfw --out outputs/lfw-pts
    python get_data.py --pts outputs/lfw-pts --source lfw --dest data-wild

The teacher is dlib's 68-point pipeline (dlib_baseline.DlibPipeline; pip install -r
requirements-bench.txt). Its model was trained on 300-W, so its points are in the 300-W labelling
convention, the one the two-head network's `300w` head learns. In each photo the face nearest the
centre (LFW's photos are centred on one face) is read twice, on the photo and on its mirror image
with the mirrored box, and the mirror reading's points are mirrored back. A face is kept when the
two readings agree (their NME at most MAX_DISAGREEMENT); its label is their mean, in which a bias
that mirrors with the photo cancels. At most --per-person faces are kept per person (LFW names a
person's photos `<Person>_<k>`, "the name before the last `_`"), the first that agree in name order:
new people, not more photos of the same ones, are what faces never seen need. Each kept face gets a
.pts file (1-based points, as 300-W's) beside a link to its photo in --out; a summary line says how
many were kept. LFW's people include the course's: train.py leaves out the LFW faces of the course
people a run holds out (its validation people, the unseen people). The labels inherit the teacher's
terms: dlib's model is for research and non-commercial use, as 300-W is.
"""

import argparse
import os
import sys

import cv2
import numpy as np
from tqdm import tqdm

from dlib_baseline import DlibPipeline
from facial_keypoints.face_crop import FLIP_PERMUTATION
from facial_keypoints.media import DataError, OneLineParser, identity_of, one_line
from facial_keypoints.outputs import inside
from metrics import nme_per_face

# The most two readings of a face may disagree, as NME (a fraction of the outer-eye-corner
# distance): a teacher whose points move by more under a mirror is guessing. A round limit, not
# tuned (docs/EXPERIMENTS.md has how many faces it keeps).
MAX_DISAGREEMENT = 0.05
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")


def mirrored_points(points, width):
    """Points read on a mirror image, as points of the photo (x flipped, left and right swapped)."""
    flipped = points[FLIP_PERMUTATION].copy()
    flipped[:, 0] = width - 1 - flipped[:, 0]
    return flipped


def central_rect(rects, width, height):
    """The detection whose centre is nearest the photo's, or None."""
    if not rects:
        return None
    centre = np.array([width, height]) / 2
    return min(rects, key=lambda r: np.linalg.norm([r.center().x - centre[0], r.center().y - centre[1]]))


def read_twice(pipeline, image):
    """(direct reading, mirror reading mirrored back) of the central face, each (68, 2); None when
    the detector finds no face."""
    height, width = image.shape[:2]
    rect = central_rect(list(pipeline.hog(image, 0)) or list(pipeline.hog(image, 1)), width, height)
    if rect is None:
        return None
    mirror = np.ascontiguousarray(image[:, ::-1])
    # the box mirrored, in the detector's own rectangle type (dlib.rectangle(left, top, right, bottom))
    mirror_rect = type(rect)(width - 1 - rect.right(), rect.top(), width - 1 - rect.left(), rect.bottom())
    return pipeline.keypoints(image, rect), mirrored_points(pipeline.keypoints(mirror, mirror_rect), width)


def write_pts(path, points):
    """A 300-W .pts file: header, then the points counting pixels from 1."""
    lines = ["version: 1", f"n_points: {len(points)}", "{",
             *(f"{x + 1:.3f} {y + 1:.3f}" for x, y in points), "}"]
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def label_folder(photos_dir, out, pipeline, per_person=1, progress=True):
    """Label the photos of photos_dir into out, at most `per_person` faces a person (0: all);
    returns (photos, found, kept, disagreements)."""
    names = sorted(n for n in os.listdir(photos_dir) if n.lower().endswith(PHOTO_EXTENSIONS))
    if not names:
        raise DataError(f"{photos_dir}: no photos (.jpg, .jpeg, .png)")
    os.makedirs(out, exist_ok=True)
    found, kept, disagreements, kept_of = 0, 0, [], {}
    for name in tqdm(names, desc="labelling", unit="photo", disable=not progress):
        person = identity_of(name)
        if per_person and kept_of.get(person, 0) >= per_person:
            continue
        path = os.path.join(photos_dir, name)
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DataError(f"{path}: not a readable image")
        readings = read_twice(pipeline, image)
        if readings is None:
            continue
        found += 1
        direct, mirrored = readings
        disagreement = float(nme_per_face(direct[None], mirrored[None])[0])
        disagreements.append(disagreement)
        if disagreement > MAX_DISAGREEMENT:
            continue
        kept += 1
        kept_of[person] = kept_of.get(person, 0) + 1
        stem = os.path.splitext(name)[0]
        os.symlink(os.path.abspath(path), os.path.join(out, name))
        write_pts(os.path.join(out, stem + ".pts"), (direct + mirrored) / 2)
    return len(names), found, kept, np.array(disagreements)


def main(argv=None):
    parser = OneLineParser(prog="pseudo_label.py", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", help="a folder of face photos (not its subfolders)")
    parser.add_argument("--out", required=True, help="the folder the .pts files and photo links go to")
    parser.add_argument("--per-person", type=int, default=1, metavar="N",
                        help="faces kept per person, the name before the last _ (0: every face)")
    args = parser.parse_args(argv)
    if args.per_person < 0:
        parser.error(f"--per-person {args.per_person}: a whole number, 0 or more")
    try:
        if not os.path.isdir(args.photos):
            raise DataError(f"{args.photos}: no such folder")
        if inside(args.out, args.photos):
            raise DataError(f"--out {args.out}: inside the photos' folder; choose another --out")
        if os.path.exists(args.out) and not (os.path.isdir(args.out) and not os.listdir(args.out)):
            raise DataError(f"--out {args.out}: exists and is not an empty folder (labels of another run "
                            "would mix with these); choose another --out")
        photos, found, kept, disagreements = label_folder(args.photos, args.out, DlibPipeline(),
                                                          args.per_person, progress=sys.stderr.isatty())
    except DataError as e:
        sys.exit(f"pseudo_label.py: {e}")
    except OSError as e:
        sys.exit(f"pseudo_label.py: {e.filename or ''}: {one_line(e)}")
    except KeyboardInterrupt:
        sys.exit("pseudo_label.py: interrupted; the faces labelled so far are in --out (import them, or "
                 "delete it to start again)")
    median = float(np.median(disagreements)) if len(disagreements) else float("nan")
    print(f"{args.out}: {kept} of {photos} photos labelled ({found} faces read; kept where the two "
          f"readings agree within {MAX_DISAGREEMENT:.0%}, {args.per_person or 'all'} a person; median "
          f"disagreement {median:.2%})")


if __name__ == "__main__":
    main()
