"""Get the course dataset into the data folder ($FKP_DATA, else ./data).

    python get_data.py                               # download the course archive
    python get_data.py --from ../shared/fkp-data     # copy a local copy: a folder or the zip
    python get_data.py --from train-test-data.zip --dest /tmp/fkp-data

Whatever the source, the dataset is assembled in a temporary folder beside the destination,
checked (zip integrity, row counts of both CSVs, every listed image present) and only then
renamed into place, so an interrupted or failed run never leaves a half dataset behind.
A destination that already holds a complete dataset is left alone.
"""

import argparse
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib

from tqdm import tqdm

from facial_keypoints.media import DataError, OneLineParser, data_dir, read_keypoints_csv

COURSE_URL = ("https://s3.amazonaws.com/video.udacity-data.com/topher/2018/May/"
              "5aea1b91_train-test-data/train-test-data.zip")
# split folder -> its CSV, and how many labelled rows the course archive has.
CSV_FILES = {"training": "training_frames_keypoints.csv", "test": "test_frames_keypoints.csv"}
EXPECTED_ROWS = {"training": 3462, "test": 770}


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

    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    remove_stale_work_folders(parent, dest)
    # Assembled beside dest (same file system, so the final rename is atomic); removed on any exit.
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}-", suffix=".tmp", dir=parent)
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
        if os.path.isdir(dest):  # an empty folder: rename replaces it
            os.rmdir(dest)
        os.rename(staged, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{dest}: dataset ready ({', '.join(f'{n} {s} rows' for s, n in expected_rows.items())})")
    return dest


def main(argv=None):
    parser = OneLineParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--from", dest="source", default=None,
                       help="a local copy: a folder in the course layout, or the course zip")
    where.add_argument("--url", default=COURSE_URL, help="where to download the course zip from")
    parser.add_argument("--dest", default=None, help="where the dataset goes (default: $FKP_DATA or ./data)")
    parser.add_argument("--training-rows", type=int, default=EXPECTED_ROWS["training"], metavar="N",
                        help="expected rows in the training CSV")
    parser.add_argument("--test-rows", type=int, default=EXPECTED_ROWS["test"], metavar="N",
                        help="expected rows in the test CSV")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    expected = {"training": args.training_rows, "test": args.test_rows}
    try:
        return get_data(args.source, args.url, args.dest, expected, progress=not args.no_progress)
    except DataError as e:
        sys.exit(f"get_data.py: {e}")
    except OSError as e:  # disk full, no permission to write beside dest, ...
        sys.exit(f"get_data.py: {e.filename or ''}: {e.strerror or e}")
    except KeyboardInterrupt:
        sys.exit("get_data.py: interrupted; nothing was written")


if __name__ == "__main__":
    main()
