"""bench.py's accuracy measurements, ours against dlib's on the same labelled images, and the rows
of their tables.

Both pipelines go through evaluate.predict_dataset with its pipeline protocol: the detection that
matches the labelled face (evaluate.matching_index) goes to the landmark model, a miss counts as a
failure. Ours is `python evaluate.py` (the same numbers), dlib's is dlib_baseline.DlibPipeline.
  accuracy      the course test images: ours by default and with --accurate, dlib raw and dlib plus
                its per-point offset (dlib_baseline.fit_dlib_offsets).
  unseen people the same on the images (both CSVs) of the people in splits/unseen_people.txt.
  wild photos   ours (its 300w head) and dlib raw on the in-the-wild set's validation photos' faces
                (media.wild_dir(), media.wild_val_photos()), labelled in 300-W's convention.
  tilted heads  both pipelines on the test images turned by each of ROLL_ANGLES, and each face
                detector option's share of faces found at DETECTOR_ROLLS.
  degraded      both pipelines on degraded copies of the test images, one per evaluate.DEGRADATIONS.
"""

import os

import numpy as np

import evaluate
from bench_speed import interleaved_medians
from degradations import decode_jpeg
from dlib_baseline import apply_point_offsets, predict_with_dlib
from facial_keypoints.detect import BlazeFaceDetector, FaceDetector
from facial_keypoints.media import (
    DataError,
    in_wild_val_photos,
    load_image,
    read_keypoints_csv,
    to_gray,
    wild_csv,
    wild_images,
)
from metrics import summarize

OURS = "ours (BlazeFace + CNN)"
OURS_ACCURATE = "ours, --accurate"
DLIB = "dlib (HOG + shape predictor)"
DLIB_DETECTOR = "dlib HOG"
ROLL_ANGLES = (0.0, 15.0, -15.0, 30.0, -30.0, 45.0, -45.0)   # tilted heads: accuracy of both pipelines
DETECTOR_ROLLS = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)         # tilted heads: faces found per detector


def accuracy(model_path, dlib_pipeline, csv_file, images_dir, backend="auto", offsets=None):
    """Metrics (metrics.summarize) for ours and dlib's on the same labelled images, and dlib's
    after apply_point_offsets with `offsets` (None without them)."""
    ours = evaluate.evaluate(model_path, "pipeline", csv_file, images_dir, backend=backend)
    pred, gt = predict_with_dlib(dlib_pipeline, csv_file, images_dir)
    corrected = None if offsets is None else summarize([apply_point_offsets(p, offsets) for p in pred], gt)
    return ours, summarize(pred, gt), corrected


def both_pipelines(model_path, dlib_pipeline, csv_file, images_dir, backend="auto", **options):
    """(ours, dlib's) metrics on the same labelled images, with the same predict_dataset `options`
    (rotate, degrade) for both."""
    ours = evaluate.evaluate(model_path, "pipeline", csv_file, images_dir, progress=False, backend=backend,
                             **options)
    return ours, summarize(*predict_with_dlib(dlib_pipeline, csv_file, images_dir, progress=False, **options))


def roll_accuracy(model_path, dlib_pipeline, csv_file, images_dir, angles=ROLL_ANGLES, backend="auto"):
    """{angle: (ours, dlib's)} metrics on the labelled images turned by each angle (tilted heads)."""
    return {angle: both_pipelines(model_path, dlib_pipeline, csv_file, images_dir, backend, rotate=angle)
            for angle in angles}


def degraded_accuracy(model_path, dlib_pipeline, csv_file, images_dir, names=tuple(evaluate.DEGRADATIONS),
                      backend="auto"):
    """{name: (ours, dlib's)} metrics on the labelled images degraded by each evaluate.DEGRADATIONS name."""
    return {name: both_pipelines(model_path, dlib_pipeline, csv_file, images_dir, backend, degrade=name)
            for name in names}


def wild_val_csv(folder):
    """The faces of the in-the-wild set's validation photos (media.wild_val_photos(), which train.py
    holds out) as a labelled CSV written in `folder`: (CSV path, the folder of its images), or None
    when there is no in-the-wild set at media.wild_dir(). DataError when the set holds none of
    those photos' faces."""
    csv_file = wild_csv()
    if not os.path.isfile(csv_file):
        return None
    frame = read_keypoints_csv(csv_file)
    frame = frame[in_wild_val_photos(frame.iloc[:, 0])]
    if frame.empty:
        raise DataError(f"{csv_file}: none of its faces is from a photo of splits/wild_val_photos.txt")
    path = os.path.join(folder, "wild_val_photos.csv")
    frame.to_csv(path, index=False)
    return path, wild_images()


def wild_accuracy(model_path, dlib_pipeline, csv_file, images_dir, backend="auto", convention=None):
    """(ours, dlib's) metrics on the wild validation faces, pipeline protocol: ours reading the head
    of `convention` (evaluate.evaluate's; metrics["convention"] says which it read), dlib's raw
    points, which follow 300-W's labelling as these labels do (no offset)."""
    ours = evaluate.evaluate(model_path, "pipeline", csv_file, images_dir, backend=backend,
                             convention=convention)
    return ours, summarize(*predict_with_dlib(dlib_pipeline, csv_file, images_dir))


# The wild table's sentence on dlib: its model (face_recognition_models' 68-point predictor) was
# trained on 300-W, whose training parts are fkp-wild's sources.
WILD_FLATTERS_DLIB = ("dlib's model was trained on 300-W's training parts (LFPW, HELEN and AFW with iBUG's "
                      "labels), which include these photos, so this row flatters dlib.")


def wild_sentences(ours):
    """Which of our heads the wild table scores (`ours`: wild_accuracy's metrics), and why the row
    flatters dlib."""
    head = ours["convention"]
    text = f"Ours reads its {head} head."
    if head != "300w":
        text = (f"Ours reads its {head} head: the model has no 300w head, so the points the two "
                "labellings place differently count as its error.")
    return f"{text} {WILD_FLATTERS_DLIB}"


def detector_options():
    """The face detectors tried for tilted heads, by name (each: gray image -> (N, 4) boxes)."""
    return {"BlazeFace (default)": BlazeFaceDetector(),
            "Haar, upright only (`--face-detector haar --upright-only`)": FaceDetector(rotations=()),
            "Haar, upright + copies turned 22.5 and 45 degrees (`--face-detector haar`)": FaceDetector(),
            "Haar, upright + copies turned 30 degrees": FaceDetector(rotations=(-30.0, 30.0)),
            "Haar, upright + copies turned 22.5, 45, 67.5 and 90 degrees":
                FaceDetector(rotations=(-22.5, 22.5, -45.0, 45.0, -67.5, 67.5, -90.0, 90.0))}


def detection_by_roll(dlib_pipeline, csv_file, images_dir, clips, angles=DETECTOR_ROLLS, every=5):
    """Share of the labelled faces each detector finds (evaluate.matching_box) in every `every`-th
    image turned by each angle, and its ms per 640x480 frame (median over the clips' first frames):
    {name: ({angle: found share}, seconds per frame)}."""
    names, gt = read_keypoints_csv(csv_file, arrays=True)
    images = [load_image(os.path.join(images_dir, name)) for name in names[::every]]
    finders = {name: (lambda image, d=d: d(to_gray(image))) for name, d in detector_options().items()}
    finders[DLIB_DETECTOR] = lambda image: dlib_pipeline.find_faces(image)[1]
    frames = [decode_jpeg(buffers[0]) for buffers, _ in clips]
    turned = {angle: [evaluate.rotated(image, points, angle)  # every detector sees the same turned images
                      for image, points in zip(images, gt[::every], strict=True)] for angle in angles}
    results = {}
    for name, find in finders.items():
        found = {angle: float(np.mean([evaluate.matching_box(find(image), points) is not None
                                       for image, points in turned[angle]])) for angle in angles}
        seconds = np.median([interleaved_medians({"find": lambda f=f, find=find: find(f)}, 3, warmup=1,
                                                 block=1)["find"] for f in frames])
        results[name] = found, float(seconds)
    return results


# ---------------------------------------------------------------------------------------------
# The rows of the accuracy tables.

ACCURACY_ROWS = (("NME (%), points 36-45 normalised", "{nme:.2f}"),
                 ("failure rate @ 8 % (%)", "{failure_8:.2f}"),
                 ("failure rate @ 10 % (%)", "{failure_10:.2f}"),
                 ("AUC @ 0.08", "{auc_8:.3f}"),
                 ("faces found", "{found}/{faces}"))
SHORT_ROWS = ("NME (%), points 36-45 normalised", "failure rate @ 10 % (%)", "faces found")


def accuracy_rows(*columns):
    """The accuracy table's rows, one column of summarize metrics per pipeline."""
    rows = [[label, *(cell.format(**m) for m in columns)] for label, cell in ACCURACY_ROWS]
    return rows + [[f"NME {region} (%)", *(f"{m['regions'][region]:.2f}" for m in columns)]
                   for region in columns[0]["regions"]]


def short_accuracy_rows(*columns):
    """accuracy_rows' NME, failure @ 10 % and faces found rows."""
    return [row for row in accuracy_rows(*columns) if row[0] in SHORT_ROWS]


def accuracy_columns(ours, theirs, corrected, fit, accurate=None):
    """The accuracy tables' columns by name: ours (and with --accurate, when measured), dlib's
    (raw and with the offset, when fitted)."""
    columns = {OURS: ours, **({OURS_ACCURATE: accurate} if accurate else {})}
    return {**columns, **({f"{DLIB}, raw": theirs, offset_label(fit): corrected} if fit else {DLIB: theirs})}


def offset_label(fit):
    return f"dlib + per-point offset fitted on {fit['found']} training faces (course labelling convention)"


def offset_section(fit, ours, raw, corrected):
    """The report's paragraph on the offset column: how it was fitted and what holds after it."""
    gap = corrected["nme"] - ours["nme"]
    claim = (f"ours is {'lower' if gap > 0 else 'higher'} by {abs(gap):.2f} points" if round(gap, 2)
             else "the two are level")
    better = sum(ours["regions"][r] < corrected["regions"][r] for r in ours["regions"])
    return f"""
dlib's model was trained on 300-W, whose labelling convention differs from this data's (the nose
bridge and the jaw most), so part of its raw error is convention. The last column adds to each of
dlib's test points a per-point offset: the mean of (label - dlib's point) over the faces dlib found
in {fit["images"]} training images (one row in {fit["step"]} of `training_frames_keypoints.csv`;
dlib found {fit["found"]} of the faces), each residual taken in the face's own frame from dlib's own
points (origin between the eye centres, x along the eye line, unit the eye-centre distance) and
mapped back through each test face's frame. After the offset, dlib's NME is {corrected["nme"]:.2f} %
(raw {raw["nme"]:.2f} %) against our {ours["nme"]:.2f} %: {claim}; ours is lower on {better} of the
{len(ours["regions"])} regions, and fails on {ours["failure_10"]:.2f} % of the faces at 10 % against
{corrected["failure_10"]:.2f} % for dlib with the offset.
"""


UNSEEN_SENTENCES = {True: "The model file's training saw these people.",
                    False: "The model file's training never saw these people."}


def unseen_sentence(meta):
    """The report's one sentence on whether the model's training saw the unseen people, as its
    metadata records it (train.py's trained_on_unseen_people)."""
    return UNSEEN_SENTENCES.get(meta.get("trained_on_unseen_people"),
                                "The model's metadata does not say whether it saw these people.")


def degraded_rows(clean, results):
    """A row for the clean images (`clean`: the accuracy stage's (ours, dlib's)), then one per
    degradation: each pipeline's NME, failure @ 10 %, faces found and NME change against clean."""
    def cells(m, base):
        return [f"{m['nme']:.2f}", f"{m['failure_10']:.2f}", f"{m['found']}/{m['faces']}",
                f"{m['nme'] - base['nme']:+.2f}"]
    return [[name, *cells(o, clean[0]), *cells(d, clean[1])]
            for name, (o, d) in {"none (clean, as above)": clean, **results}.items()]


def roll_rows(results):
    return [[f"{angle:+g}", f"{o['nme']:.2f}", f"{o['failure_10']:.2f}", f"{o['found']}/{o['faces']}",
             f"{d['nme']:.2f}", f"{d['failure_10']:.2f}", f"{d['found']}/{d['faces']}"]
            for angle, (o, d) in results.items()]


def detector_rows(results):
    return [[name, *(f"{100 * found[a]:.0f} %" for a in found), f"{1e3 * seconds:.0f} ms"]
            for name, (found, seconds) in results.items()]
