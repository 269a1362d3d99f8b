"""Where results go: output files and folders checked before any work starts, written whole
(beside the target, then renamed over it) and never over an input, a shipped model or another run's
file. NumPy and OpenCV only (no torch), like media.py, whose errors it raises.

    outputs = Outputs("outputs", json_path="k.jsonl", inputs=[...])  # never overwrites an input
    write_image("outputs/photo.jpg", bgr)                             # whole, or not at all

An output the run cannot write is an OutputError (the run stops); one that is the input's fault (a
name too long) is a DataError (that input fails, the run goes on).
"""

import errno
import json
import os
import tempfile

import cv2

from .media import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DataError,
    OutputError,
    native_stderr_captured,
    readable_video,
)


class VideoWriter:
    """An .mp4 file written frame by frame from BGR arrays (what cv2 and draw_faces give). The frames
    go to a temporary file beside `path`, renamed to `path` by close() once the video is whole:
    nothing stops a run (Ctrl-C, SIGTERM, a full disk) with a video under `path` that no player
    can open."""

    def __init__(self, path, fps, width, height):
        self.path, self.frames = path, 0
        folder, name = os.path.split(path)
        stem, ext = os.path.splitext(name)
        try:  # the extension last: it chooses the container
            fd, self.temp = tempfile.mkstemp(dir=folder or ".", prefix=f".{stem[:100]}.", suffix=ext)
            os.fchmod(fd, new_file_mode())
            os.close(fd)
        except OSError as e:
            raise output_failure(path, "the video", e) from None
        with native_stderr_captured():
            self.writer = cv2.VideoWriter(self.temp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            remove_quietly(self.temp)
            raise DataError(f"{path}: could not open the video for writing")

    def write(self, bgr):
        self.writer.write(bgr)
        self.frames += 1

    def close(self):
        """Finish the file and put it under its name; a video without frames is removed, and one
        that cannot be read back (OpenCV does not report a failed write) is an OutputError."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        if self.frames == 0:
            remove_quietly(self.temp)
        elif not readable_video(self.temp):
            remove_quietly(self.temp)
            raise OutputError(f"{self.path}: could not write the video (disk full?)")
        else:
            try:
                os.replace(self.temp, self.path)
            except OSError as e:
                remove_quietly(self.temp)
                raise output_failure(self.path, "the video", e) from None


# The models the package ships (the .pt, its ONNX export and int8 copy): what a run loads by
# default, so no output may replace them, whichever of them the run has loaded.
SHIPPED_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saved_models")


def reserve_output(option, path, inputs=(), protected=(), json_lines=False):
    """Refuse, before any work starts, an output file `path` (given by `option`, e.g. "--json")
    that the run must not write: OutputError, one line naming the option and the file.

    Refused: `path` is one of `inputs` or inside an input folder; `path` is one of `protected` or
    inside a protected folder (the model files in use, SHIPPED_MODELS, the run's other outputs);
    with `json_lines`, a name with an image or video extension, or an existing regular file that
    is not JSON Lines (holds_json_lines: a model, an image); a folder; a path under a file; a
    folder this process cannot create or write in (check_writable, which creates the folder). A
    device (/dev/null) passes. Entries of `inputs` and `protected` that are not paths (None, a
    camera number, an image in memory) are skipped. Returns `path`."""
    for taken in (p for p in inputs if isinstance(p, str) and inside(path, p)):
        where = "one of the inputs" if same_file(path, taken) else f"inside the input folder {taken}"
        raise OutputError(f"{option} {path}: is {where}; choose another {option}")
    for taken in (p for p in protected if isinstance(p, str) and inside(path, p)):
        where = taken if same_file(path, taken) else f"inside {taken}"
        raise OutputError(f"{option} {path}: is {where}, which this run must leave as it is; "
                          f"choose another {option}")
    if json_lines and path.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS):
        raise OutputError(f"{option} {path}: a name for an image or a video (what --out receives); "
                          f"{option} writes JSON Lines: name it .jsonl")
    if json_lines and not holds_json_lines(path):
        raise OutputError(f"{option} {path}: exists and is not a JSON Lines file (a model, an image?); "
                          f"choose another {option}")
    if os.path.exists(path) and not os.path.isfile(path) and not os.path.isdir(path):
        return path  # a device: written as it is
    try:
        check_writable(option, path)
    except DataError as error:
        raise OutputError(str(error)) from None
    return path


def reserve_file_output(option, path, holds, kind, inputs=(), protected=()):
    """reserve_output for a file written beside `path` and renamed over it (a model, a plot):
    also refused, a path that is not a regular file (a device or a pipe, which the rename would
    replace) and an existing file that holds(path) says is not `kind`. Returns `path`."""
    reserve_output(option, path, inputs, protected)
    if os.path.exists(path) and not (os.path.isfile(path) and holds(path)):
        raise OutputError(f"{option} {path}: exists and is not {kind}; choose another {option}")
    return path


def check_writable(option, path):
    """Refuse, before any long work, an output file that could not be written at the end: a
    folder, a path under a file, or a folder this process cannot write in (DataError)."""
    if os.path.isdir(path):
        raise DataError(f"{option} {path} is a folder; give the name of a file (in it, or elsewhere)")
    folder = os.path.dirname(path) or "."
    existing = nearest_existing(folder)
    if not os.path.isdir(existing):
        raise DataError(f"{option} {path}: {existing} is a file, not a folder; pick another {option}")
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DataError(f"{option} {path}: cannot write in {folder} ({e.strerror}); "
                        f"pick another {option}") from None


def write_image(path, bgr):
    """Write an output image. A name too long for the file system, or an image the format cannot
    hold, is a DataError (that input fails, the run goes on); anything else is an OutputError: the
    output folder is at fault (full disk, no permission), so the run stops. Written to a temporary
    file beside `path` and renamed over it: nothing half written stays, and a failure leaves an
    earlier file of that name as it was. Encoded here and written by Python, so that a failure
    comes with its reason."""
    try:
        ok, encoded = cv2.imencode(os.path.splitext(path)[1], bgr)
    except cv2.error:
        ok = False
    if not ok:
        raise DataError(f"{path}: OpenCV cannot write this image in that format")
    folder, name = os.path.split(path)
    stem, ext = os.path.splitext(name)
    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=folder or ".", prefix=f".{stem[:100]}.", suffix=ext)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, new_file_mode())
            f.write(encoded)
        os.replace(temp, path)
    except OSError as e:
        if temp is not None:
            remove_quietly(temp)
        raise output_failure(path, "the image", e) from None


def output_failure(path, what, error):
    """The error for an output file that could not be written: a DataError when its name is too
    long (that input's fault), else an OutputError naming the reason."""
    if error.errno == errno.ENAMETOOLONG:
        return DataError(f"{path}: file name too long for the output folder's file system; "
                         f"rename the input or choose a shorter --out")
    return OutputError(f"{path}: cannot write {what} ({error.strerror or error})")


def new_file_mode():
    """The mode open() gives a new file (0o666 less the umask), for a temporary file renamed into
    place: mkstemp makes it 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:
        pass


def check_out_folder(option, folder):
    """Refuse, before any work, an output folder that is a file, lies under a file or cannot be
    created (OutputError); it is created later, by the first output."""
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError(f"{folder}: is a file; {option} takes a folder")
    existing = nearest_existing(folder)
    if not os.path.isdir(existing):
        raise OutputError(f"{option} {folder}: {existing} is a file, not a folder; choose another {option}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {folder}: cannot create or write in {existing} (no permission, or a "
                          f"read-only file system); choose another {option}")


def nearest_existing(path):
    """`path` if it exists, else its nearest existing parent (a file: the path lies under it)."""
    while not os.path.exists(path):
        parent = os.path.dirname(path) or "."
        if parent == path:
            break
        path = parent
    return path


def same_file(path, other):
    return os.path.realpath(path) == os.path.realpath(other)


def inside(path, folder):
    """True when path is folder itself or anything below it (paths resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def holds_json_lines(path):
    """True for a missing or empty file, or one whose first line is a JSON object: a file --json may
    replace. Any other regular file (a model, an image) is not ours to overwrite; a device such
    as /dev/null is written as it is."""
    if not os.path.isfile(path):
        return True
    try:
        with open(path, "rb") as f:
            first = f.readline(1_000_000)
    except OSError:
        return False
    if not first.strip():
        return True
    try:
        return isinstance(json.loads(first), dict)
    except ValueError:
        return False


def holds_plot(path):
    """True for a file matplotlib wrote: its PNG, SVG, PS and EPS files name it ("Matplotlib") in
    their first 4096 bytes, its PDF files in the information dictionary at their end. A file that
    does not (a photo, or a plot in a format that cannot say who wrote it: JPEG, TIFF, WebP) is not
    ours to replace."""
    try:
        with open(path, "rb") as f:
            found = f.read(4096)
            if found.startswith(b"%PDF"):
                f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
                found = f.read()
    except OSError:
        return False
    return b"Matplotlib" in found


class JsonLinesFile:
    """A JSON Lines output (--json), one record per write, that replaces `path` as a whole.

    Records go to a temporary file beside `path`, renamed over it by `close`: whatever stops the
    run (the end, Ctrl-C, SIGTERM, a full disk), `path` holds either what it held before or the
    records finished, each whole. The run holds an exclusive lock on `path` meanwhile, so a second
    run naming the same file is refused instead of mixing its records in. A device (/dev/null,
    /dev/stdout) is written as it is."""

    def __init__(self, option, path, inputs=(), protected=()):
        reserve_output(option, path, inputs, protected, json_lines=True)
        self.option, self.path, self.whole = option, path, 0
        self.target, self.temp, self.lock = os.path.realpath(path), None, None
        self.created = not os.path.exists(self.target)  # then the lock creates it, empty
        if os.path.exists(self.target) and not os.path.isfile(self.target):
            self.fd = open_for_output(option, path, os.O_WRONLY | os.O_APPEND)
            return
        self.lock = lock_output(option, path, self.target)
        try:
            # the name shortened: the whole of a legal name, with mkstemp's 14 characters, may be too long
            self.fd, self.temp = tempfile.mkstemp(dir=os.path.dirname(self.target), suffix=".tmp",
                                                  prefix=f".{os.path.basename(self.target)[:100]}.")
            os.fchmod(self.fd, os.fstat(self.lock).st_mode & 0o777)  # the target's, not mkstemp's 0600
        except OSError as e:
            os.close(self.lock)
            raise OutputError(f"{option} {path}: cannot write beside it ({e.strerror}); "
                              f"choose another {option}") from None

    def write(self, record):
        """One JSON line, written at once: a full disk stops the run at the record that failed."""
        line = (json.dumps(record) + "\n").encode()
        left = memoryview(line)
        try:
            while left:
                left = left[os.write(self.fd, left):]
        except OSError as e:
            raise OutputError(f"{self.path}: cannot write ({e.strerror or e})") from None
        self.whole += len(line)

    def close(self, keep=True):
        """Put the whole records in place of the target (a record cut short by a full disk is
        dropped), and release the lock. OutputError if the rename fails: the target is unchanged.
        Without `keep` (the run stopped before its first input), the target is left as it was."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        if not keep and self.temp is not None:
            remove_quietly(self.temp)
            if self.created:
                remove_quietly(self.target)
            self.temp = None
        try:
            if self.temp is not None:
                os.ftruncate(fd, self.whole)
                os.fsync(fd)  # once, so that a crash cannot leave an empty file under the name
                os.replace(self.temp, self.target)
        except OSError as e:
            remove_quietly(self.temp)
            raise OutputError(f"{self.path}: cannot write ({e.strerror or e}); it is unchanged") from None
        finally:
            os.close(fd)
            if self.lock is not None:
                os.close(self.lock)


def open_for_output(option, path, flags):
    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise OutputError(f"{option} {path}: cannot open ({e.strerror}); choose another {option}") from None


def lock_output(option, target_path, target):
    """A descriptor of `target` (created empty when missing) holding an exclusive lock on it;
    OutputError when another run holds it. No lock where there is no flock (Windows)."""
    try:
        import fcntl
    except ImportError:
        return open_for_output(option, target_path, os.O_RDONLY | os.O_CREAT)
    while True:
        fd = open_for_output(option, target_path, os.O_RDONLY | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise OutputError(f"{option} {target_path}: another run is writing this file; let it finish "
                              f"or choose another {option}") from None
        # The run that held the lock may have renamed its result over the name meanwhile: then
        # this descriptor is of the old file, and the lock must be taken on the new one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(target))
        except OSError:
            same = False
        if same:
            return fd
        os.close(fd)


class Outputs:
    """Output files under `out_dir` named after their inputs, and the JSON Lines file.

    The one naming rule: an output never replaces one of the run's inputs (files, or anything
    inside an input folder), a `protected` file (the model in use, the shipped models), the JSON
    Lines file, nor a file written earlier in the run: it gets a _2, _3 ... suffix instead. Every
    output path is checked up front, before anything is read or written: `out_dir` can be created
    and `json_path` may be written (reserve_output)."""

    def __init__(self, out_dir, json_path=None, inputs=(), protected=()):
        check_out_folder("--out", out_dir)
        self.out_dir, self.used, self.json_path = out_dir, set(), json_path
        self.protected = [os.path.realpath(p) for p in (*inputs, *protected)
                          if isinstance(p, str) and os.path.exists(p)]
        self.json = None
        if json_path:
            self.json = JsonLinesFile("--json", json_path, inputs, protected)
            self.used.add(os.path.realpath(json_path))

    def is_input(self, path):
        """An existing file given as input, inside an input folder, or protected."""
        return os.path.exists(path) and any(inside(path, p) for p in self.protected)

    def path_for(self, relative_name, ext=None, suffix=""):
        """out_dir/relative_name (stem + suffix, extension replaced by `ext` if given), made unique,
        its folder created (OutputError if it cannot be; DataError if its name is too long)."""
        stem, old_ext = os.path.splitext(relative_name)
        stem, ext = stem + suffix, ext or old_ext
        path, n = os.path.join(self.out_dir, stem + ext), 1
        while os.path.realpath(path) in self.used or self.is_input(path):
            n += 1
            path = os.path.join(self.out_dir, f"{stem}_{n}{ext}")
        self.used.add(os.path.realpath(path))
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        except OSError as e:
            raise output_failure(os.path.dirname(path), "the folder", e) from None
        return path

    def write_record(self, record):
        if self.json:
            self.json.write(record)

    def close(self, keep=True):
        """Put the JSON Lines file in place (JsonLinesFile.close); OutputError if that fails."""
        if self.json:
            self.json.close(keep)
