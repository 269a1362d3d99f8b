"""Get the course dataset into the data folder ($FKP_DATA, else ./data), or import a 68-point set in
the 300-W layout into the in-the-wild set ($FKP_WILD, else ./data-wild).

    python get_data.py                               # download the course archive
    python get_data.py --from ../shared/fkp-data     # copy a local copy: a folder or the zip
    python get_data.py --from train-test-data.zip --dest /tmp/fkp-data
    python get_data.py --pts 300W/lfpw/trainset --source lfpw    # 300-W faces into ./data-wild
    python get_data.py --pts 300W/afw --source afw --dest /tmp/wild

Wherever the course data comes from, it is assembled in a temporary folder beside the destination,
checked (zip integrity, row counts of both CSVs, every listed image present) and only then
renamed into place, so an interrupted or failed run never leaves a half dataset behind.
A destination that already holds a complete dataset is left alone.

--pts reads a folder (not its subfolders) of faces in the 300-W layout: a .pts file per face
(68 points counting pixels from 1, with or without the `version`/`n_points` header) and its photo
beside it, named as the .pts file or, where a photo has several faces (`<photo>_1.pts`,
`<photo>_2.pts`), as the photo. Each face is cut out with fkp-wild's crop rule (the points' box
where the course's frames have it, clamped to the photo, shrunk to at most 120 px; see
../shared/fkp-wild/README.md) into the course's layout, training/ and its CSV, as
`<source>-<photo>_<face>.jpg`, so that "the name before the last `_`" is the photo. The faces are
cut out and checked in a temporary folder beside the destination too. One source is imported at
a time, and sources gather in one set, as fkp-wild's three do: into an empty destination the set
is renamed whole; into a set already there the new images are moved first, then the checked CSV
that lists them all replaces the old one in one rename (an interrupted import leaves that CSV as
it was; images it moved in unlisted are replaced when that source is imported again). A source
the destination already holds is left alone: move the set away to import it again.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from facial_keypoints.media import (
    SOURCE_NAME,
    DataError,
    OneLineParser,
    data_dir,
    read_keypoints_csv,
    wild_dir,
    wild_source,
)

COURSE_URL = ("https://s3.amazonaws.com/video.udacity-data.com/topher/2018/May/"
              "5aea1b91_train-test-data/train-test-data.zip")
# split folder -> its CSV, and how many labelled rows the course archive has.
CSV_FILES = {"training": "training_frames_keypoints.csv", "test": "test_frames_keypoints.csv"}
EXPECTED_ROWS = {"training": 3462, "test": 770}

# fkp-wild's crop rule (../shared/fkp-wild/README.md): the points' box sits where the course's
# frames have it, as fractions of the crop's width and height, so that wild faces are framed as
# the course's are; then the crop is shrunk (never enlarged) until that box's longer side is at
# most MAX_BOX_SIDE px, about the size of the course's faces.
BOX_IN_CROP = np.array([[0.287, 0.364], [0.720, 0.733]])  # (left, top), (right, bottom)
MAX_BOX_SIDE = 120
JPEG_QUALITY = 92
NUM_POINTS = 68
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png")  # the 300-W sets' photos


def has_layout(folder):
    """True when the folder has both CSVs and both image folders (not yet checked further)."""
    return all(os.path.isfile(os.path.join(folder, csv)) and os.path.isdir(os.path.join(folder, split))
               for split, csv in CSV_FILES.items())


def find_layout(folder, source):
    """The folder inside `folder` that holds the course layout: itself, or one below (e.g. data/)."""
    for root, dirs, _ in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d != "__MACOSX")  # macOS zip metadata, not data
        if has_layout(root):
            return root
        if os.path.relpath(root, folder).count(os.sep) >= 1:  # look two levels deep at most
            dirs[:] = []
    raise DataError(f"{source}: no {CSV_FILES['training']} with training/ and test/ beside it "
                    "(not the course dataset?)")


def verify(root, source, expected_rows=EXPECTED_ROWS):
    """Check both CSVs (format, row count) and that every image they list exists."""
    for split, csv in CSV_FILES.items():
        names, _ = read_keypoints_csv(os.path.join(root, csv), arrays=True)
        expected = expected_rows.get(split)
        if expected is not None and len(names) != expected:
            raise DataError(f"{source}: {csv} has {len(names)} rows, expected {expected}")
        missing = [name for name in names if not os.path.isfile(os.path.join(root, split, name))]
        if missing:
            raise DataError(f"{source}: {split}/{missing[0]} is listed in {csv} but missing "
                            f"({len(missing)} of {len(names)} listed images missing)")


def download(url, path, progress=True):
    """Download url to path with a progress bar; a short or failed transfer is a DataError."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=f"downloading {os.path.basename(url)}", disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except urllib.error.URLError as e:
        raise DataError(f"{url}: download failed ({e.reason})") from None
    except OSError as e:  # timeouts, connection resets mid-transfer
        raise DataError(f"{url}: download failed ({e})") from None
    if total is not None and received != total:
        raise DataError(f"{url}: download incomplete ({received} of {total} bytes)")


def extract(zip_path, folder, source, progress=True):
    """Test every member's CRC, then extract the archive (macOS metadata left out) into folder."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise DataError(f"{source}: corrupt zip archive ({bad} fails its CRC check)")
            members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]
            for member in tqdm(members, desc="extracting", unit="file", disable=not progress):
                archive.extract(member, folder)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise DataError(f"{source}: corrupt zip archive ({e})") from None


def copy_layout(root, folder, progress=True):
    """Copy the course layout (CSVs, training/, test/) from root into folder.

    Files are copied without their permission bits: a read-only source gives a writable copy.
    """
    os.makedirs(folder)
    for csv in CSV_FILES.values():
        shutil.copyfile(os.path.join(root, csv), os.path.join(folder, csv))
    for split in CSV_FILES:
        os.makedirs(os.path.join(folder, split))
        files = sorted(e.name for e in os.scandir(os.path.join(root, split)) if e.is_file())
        for name in tqdm(files, desc=f"copying {split}", unit="file", disable=not progress):
            shutil.copyfile(os.path.join(root, split, name), os.path.join(folder, split, name))


def rename_into_place(staged, dest):
    """The checked set becomes dest in one rename (dest absent, or an empty folder it replaces)."""
    if os.path.isdir(dest):
        os.rmdir(dest)
    os.rename(staged, dest)


def work_folder_beside(dest):
    """(dest's parent, a new work folder in it): assembled beside dest, on the same file system, the
    data renames into place atomically; earlier runs' leftover work folders are removed first."""
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    remove_stale_work_folders(parent, dest)
    return parent, tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}-", suffix=".tmp", dir=parent)


def remove_stale_work_folders(parent, dest):
    """Remove the work folders of earlier runs that were killed before they could clean up
    (SIGKILL, power loss): `.<dest name>-*.tmp` beside dest, never the dataset itself."""
    prefix = f".{os.path.basename(dest)}-"
    for entry in os.scandir(parent):
        if entry.is_dir() and entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
            print(f"removing {entry.path}, left by an interrupted earlier run")
            shutil.rmtree(entry.path, ignore_errors=True)


def get_data(source=None, url=COURSE_URL, dest=None, expected_rows=EXPECTED_ROWS, progress=True):
    """Put a checked dataset at dest from a local folder or zip (source) or from url.

    Returns dest. Raises DataError on any problem, leaving dest as it was.
    """
    dest = os.path.abspath(dest or data_dir())
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise DataError(f"{dest}: exists and is not a folder; move it away or pick --dest")
    if os.path.isdir(dest) and os.listdir(dest):
        if not has_layout(dest):
            raise DataError(f"{dest}: exists and is not the course dataset; move it away or pick --dest")
        try:
            verify(dest, dest, expected_rows)
        except DataError as e:
            raise DataError(f"{e} (an incomplete dataset; move it away and run again)") from None
        print(f"{dest}: the dataset is already there and complete; left alone")
        return dest
    if source is not None and not os.path.exists(source):
        raise DataError(f"{source}: no such file or folder")

    parent, work = work_folder_beside(dest)
    try:
        if source is not None and os.path.isdir(source):
            staged = os.path.join(work, "data")
            copy_layout(find_layout(source, source), staged, progress)
        else:
            zip_path = source
            if zip_path is None:
                zip_path = os.path.join(work, "archive.zip")
                download(url, zip_path, progress)
            label = source or url
            extract(zip_path, os.path.join(work, "extracted"), label, progress)
            staged = find_layout(os.path.join(work, "extracted"), label)
        verify(staged, source or url, expected_rows)
        rename_into_place(staged, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{dest}: dataset ready ({', '.join(f'{n} {s} rows' for s, n in expected_rows.items())})")
    return dest


# ---------------------------------------------------------------------------------------------
# In-the-wild sets: 300-W's layout (a photo and a .pts file per face) into the course's.

def parse_point(path, number, line):
    """One `x y` line of a .pts file as two finite floats; anything else is a DataError."""
    try:
        point = [float(value) for value in line.split()]
    except ValueError:
        point = []
    if len(point) != 2 or not np.isfinite(point).all():
        raise DataError(f"{path}: line {number}: {line!r} is not a point (x y)")
    return point


def read_pts(path):
    """The 68 points of a 300-W .pts file, counting pixels from 0: a (68, 2) float64 array.

    The header (`version: 1`, `n_points: 68`, the points between `{` and `}`) is optional."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [(number, line.strip()) for number, line in enumerate(f, 1) if line.strip()]
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (not a .pts file?)") from None
    header = {}
    while lines and ":" in lines[0][1]:
        key, _, value = lines.pop(0)[1].partition(":")
        header[key.strip()] = value.strip()
    if lines and lines[0][1] == "{":
        if lines[-1][1] != "}":
            raise DataError(f"{path}: no closing }} after the points")
        lines = lines[1:-1]
    if header.get("n_points", str(NUM_POINTS)) != str(NUM_POINTS):
        raise DataError(f"{path}: n_points: {header['n_points']}, expected {NUM_POINTS}")
    if len(lines) != NUM_POINTS:
        raise DataError(f"{path}: {len(lines)} points, expected {NUM_POINTS}")
    points = np.array([parse_point(path, number, line) for number, line in lines])
    return points - 1  # .pts files count pixels from 1, the course's CSVs from 0


def face_name(source, pts_stem):
    """The image name of the face a .pts file labels: `<source>-<photo>_<face>.jpg`.

    300-W names a photo's faces `<photo>_<face>` (HELEN, AFW, iBUG: a face number of one or two
    digits) and a one-face photo by itself (LFPW's `image_0001`: face 0). LFPW's and iBUG's
    `image_` prefix says nothing and fkp-wild's names go without it ('lfpw-0001_0.jpg')."""
    match = re.fullmatch(r"(.+)_(\d{1,2})", pts_stem)
    photo, face = match.groups() if match else (pts_stem, "0")
    return f"{source}-{photo.removeprefix('image_')}_{face}.jpg"


def photos_by_stem(folder):
    """The photos in folder by their name without extension."""
    photos = {}
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in PHOTO_EXTENSIONS:
            if stem in photos:
                raise DataError(f"{os.path.join(folder, name)}: two photos named {stem} "
                                f"({photos[stem]} and {name}); keep one")
            photos[stem] = name
    return photos


def photo_of(pts_path, photos):
    """The photo a .pts file labels: the one of its name (LFPW, HELEN), else the one named as
    the name before its last `_` (AFW: one photo, a .pts file per face)."""
    stem = os.path.splitext(os.path.basename(pts_path))[0]
    for candidate in (stem, stem.rsplit("_", 1)[0]):
        if candidate in photos:
            return os.path.join(os.path.dirname(pts_path), photos[candidate])
    raise DataError(f"{pts_path}: no photo beside it ({stem}.jpg or .png, or its photo's without "
                    "the face number)")


def read_photo(path):
    """A photo as BGR uint8, its pixels as stored: 300-W's points label the stored pixel grid,
    so EXIF orientation is ignored."""
    image = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return image


def crop_box(points, width, height):
    """fkp-wild's crop for a face's points in a width x height photo: (x0, y0, x1, y1), whole
    pixels, the points' box where the course's frames have it, clamped to the photo."""
    low, high = points.min(axis=0), points.max(axis=0)
    size = (high - low) / (BOX_IN_CROP[1] - BOX_IN_CROP[0])
    start = low - BOX_IN_CROP[0] * size
    x0, y0 = np.maximum(np.round(start), 0).astype(int)
    x1, y1 = np.minimum(np.round(start + size), (width, height)).astype(int)
    return x0, y0, x1, y1


def crop_face(image, points, label):
    """The face cut out of a photo by fkp-wild's crop rule: (crop, keypoints in its pixels)."""
    box_size = np.ptp(points, axis=0)
    if (box_size <= 0).any():
        raise DataError(f"{label}: its points lie on a line (not a face)")
    x0, y0, x1, y1 = crop_box(points, image.shape[1], image.shape[0])
    if x1 <= x0 or y1 <= y0:
        raise DataError(f"{label}: its points lie outside the photo ({image.shape[1]} x {image.shape[0]} px)")
    scale = min(1.0, MAX_BOX_SIDE / box_size.max())
    size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
    crop = cv2.resize(image[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
    ratio = np.array(size) / (x1 - x0, y1 - y0)
    # cv2.resize maps pixel centres to pixel centres: hence the half pixels.
    return crop, (points - (x0, y0) + 0.5) * ratio - 0.5


def import_faces(pts_dir, source, folder, progress=True):
    """Cut out every face of pts_dir into folder/training (JPEG); returns their names and their
    keypoints in the crops' pixels, an (N, 68, 2) array, in the order of the .pts files' names."""
    pts_files = sorted(name for name in os.listdir(pts_dir) if name.lower().endswith(".pts"))
    if not pts_files:
        raise DataError(f"{pts_dir}: no .pts files (expected the 300-W layout: a photo and a .pts "
                        "file per face)")
    photos = photos_by_stem(pts_dir)
    os.makedirs(os.path.join(folder, "training"))
    labelled_by = {}
    keypoints = []
    for pts_file in tqdm(pts_files, desc=f"importing {source}", unit="face", disable=not progress):
        path = os.path.join(pts_dir, pts_file)
        name = face_name(source, os.path.splitext(pts_file)[0])
        if name in labelled_by:
            raise DataError(f"{path}: its face would be {name}, as {labelled_by[name]}'s is")
        labelled_by[name] = path
        crop, points = crop_face(read_photo(photo_of(path, photos)), read_pts(path), path)
        out = os.path.join(folder, "training", name)
        if not cv2.imwrite(out, crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(0, "could not write the image (disk full, or no permission?)", out)
        keypoints.append(points)
    return list(labelled_by), np.array(keypoints)


def write_keypoints_csv(path, names, keypoints):
    """A CSV in the course's format: the header ",0,1,...,135", then a name and x0, y0 .. x67, y67."""
    frame = pd.DataFrame(keypoints.reshape(len(names), -1), columns=[str(i) for i in range(2 * NUM_POINTS)])
    frame.insert(0, "", names)
    frame.to_csv(path, index=False)


def wild_faces_at(dest):
    """The names and keypoints of the in-the-wild set at dest, checked: none for a missing or
    empty folder; anything else there is a DataError."""
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise DataError(f"{dest}: exists and is not a folder; move it away or pick --dest")
    if not os.path.isdir(dest) or not os.listdir(dest):
        return [], np.zeros((0, NUM_POINTS, 2))
    if os.path.exists(os.path.join(dest, "test")) or os.path.exists(os.path.join(dest, CSV_FILES["test"])):
        raise DataError(f"{dest}: holds the course dataset; the in-the-wild set goes elsewhere (--dest)")
    if not (os.path.isfile(os.path.join(dest, CSV_FILES["training"]))
            and os.path.isdir(os.path.join(dest, "training"))):
        raise DataError(f"{dest}: exists and is not an in-the-wild set; move it away or pick --dest")
    try:
        return verify_wild(dest)
    except DataError as e:
        raise DataError(f"{e} (an incomplete set; move it away and run again)") from None


def verify_wild(root, images_dir=None, expected_rows=None):
    """Check an in-the-wild set's CSV (format, unique names, row count) and that every image it
    lists is in images_dir (default root/training); returns its names and keypoints."""
    csv_file = os.path.join(root, CSV_FILES["training"])
    names, keypoints = read_keypoints_csv(csv_file, images_dir or os.path.join(root, "training"), arrays=True)
    if len(set(names)) != len(names):
        raise DataError(f"{csv_file}: {len(names) - len(set(names))} image names listed twice")
    if expected_rows is not None and len(names) != expected_rows:
        raise DataError(f"{csv_file}: {len(names)} rows, expected {expected_rows}")
    return names, keypoints


def move_in(staged, dest, new_names, expected_rows):
    """Add staged faces to the set at dest: their images first, then, checked, the CSV that lists
    them replaces dest's in one rename, so an interrupted run leaves dest's CSV as it was."""
    for name in new_names:
        os.replace(os.path.join(staged, "training", name), os.path.join(dest, "training", name))
    verify_wild(staged, os.path.join(dest, "training"), expected_rows)
    csv_file = CSV_FILES["training"]
    os.replace(os.path.join(staged, csv_file), os.path.join(dest, csv_file))


def get_wild(pts_dir, source, dest=None, progress=True):
    """Import the 300-W-layout faces of pts_dir as `source` into the in-the-wild set at dest.

    Returns dest. Raises DataError on any problem, leaving dest's set as it was."""
    dest = os.path.abspath(dest or wild_dir())
    names, keypoints = wild_faces_at(dest)
    held = sum(wild_source(name) == source for name in names)
    if held:
        print(f"{dest}: already holds {held} {source} faces; left alone (move the set away to import "
              "them again)")
        return dest
    if not os.path.isdir(pts_dir):
        raise DataError(f"{pts_dir}: no such folder")
    parent, work = work_folder_beside(dest)
    try:
        staged = os.path.join(work, "wild")
        new_names, new_keypoints = import_faces(pts_dir, source, staged, progress)
        # Hundredths of a pixel, as fkp-wild's CSV; the faces already there are written back as read.
        write_keypoints_csv(os.path.join(staged, CSV_FILES["training"]), names + new_names,
                            np.concatenate([keypoints, new_keypoints.round(2)]))
        if names:
            move_in(staged, dest, new_names, len(names) + len(new_names))
        else:
            verify_wild(staged, expected_rows=len(new_names))
            rename_into_place(staged, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{dest}: {len(new_names)} {source} faces imported ({len(names) + len(new_names)} in the set)")
    return dest


def main(argv=None):
    parser = OneLineParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from", dest="source", metavar="PATH", default=None,
                       help="a local copy: a folder in the course layout, or the course zip")
    where.add_argument("--url", default=COURSE_URL, help="where to download the course zip from")
    where.add_argument("--pts", metavar="DIR", default=None,
                       help="a folder of faces in the 300-W layout (a photo and a .pts file per face) to "
                            "import into the in-the-wild set; needs --source")
    parser.add_argument("--source", metavar="NAME", dest="source_name", default=None,
                        help="with --pts: the set's name (lfpw, helen, afw, ...; lower-case letters and "
                             "digits), which starts its image names: NAME-<photo>_<face>.jpg")
    parser.add_argument("--dest", default=None, help="where the dataset goes (default: $FKP_DATA or "
                                                     "./data; with --pts, $FKP_WILD or ./data-wild)")
    parser.add_argument("--training-rows", type=int, default=EXPECTED_ROWS["training"], metavar="N",
                        help="expected rows in the training CSV")
    parser.add_argument("--test-rows", type=int, default=EXPECTED_ROWS["test"], metavar="N",
                        help="expected rows in the test CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if (args.pts is None) != (args.source_name is None):
        parser.error("--pts and --source go together")
    if args.source_name is not None and not SOURCE_NAME.fullmatch(args.source_name):
        parser.error(f"--source {args.source_name!r}: lower-case letters and digits only")
    expected = {"training": args.training_rows, "test": args.test_rows}
    try:
        if args.pts is not None:
            return get_wild(args.pts, args.source_name, args.dest, progress=not args.no_progress)
        return get_data(args.source, args.url, args.dest, expected, progress=not args.no_progress)
    except DataError as e:
        sys.exit(f"get_data.py: {e}")
    except OSError as e:  # disk full, no permission to write beside dest, ...
        sys.exit(f"get_data.py: {e.filename or ''}: {e.strerror or e}")
    except KeyboardInterrupt:
        left = "the in-the-wild set was left as it was" if args.pts else "nothing was written"
        sys.exit(f"get_data.py: interrupted; {left}")

if __name__ == "__main__":
    main()
