"""The command-line loop detect.py and filters.py share: every input the user named, read, processed
and reported the same way; what each program does with a frame is an Action (how to draw the
output, how to name it).

    run(args, make_detector, Action(media.draw_faces), json_path=args.json)

Still images can go to a pool of worker processes (`--workers N`), each with its own detector and
one thread: outputs are named, JSON lines written and results printed in input order, whatever
order the workers finish in, so the output is the same as with one process. Videos are tracked
in this process (a tracker follows one frame after another). `image_result` is the work on one
image, for the pool and for anything else that spreads images over processes (cluster.py).
"""

import os
import signal
import sys
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import cv2
from tqdm import tqdm

from . import media
from .backends import BACKENDS, TWO_HEAD_CONVENTIONS, ConventionError, limit_threads
from .media import DataError
from .outputs import SHIPPED_MODELS, Outputs, VideoWriter, write_image
from .tracking import FaceTracker

MAX_WORKERS = 8  # past this, workers mostly wait for the disk and each holds its own model
FACE_DETECTORS = ("blazeface", "haar")  # detect.face_detector_for builds them


def default_workers():
    """The machine's cores (those this process may use), at most MAX_WORKERS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS))


@dataclass
class Action:
    draw: object              # (rgb, faces) -> the BGR output image; picklable for --workers
    program: str = "detect.py"
    suffix: str = ""          # output name: <input name><suffix><extension>
    image_ext: str = None     # None: the input's own extension
    need_faces: bool = False  # an image, or a whole video, without a face is an error


def image_result(detector, item, out_path, action):
    """Detect and record one still image, and write its drawn copy to out_path (None: no image
    written): (JSON record, number of faces). Raises DataError for a bad image."""
    image = item.image()
    faces = detector.detect(image)
    if action.need_faces and not faces:
        raise DataError(f"{item.name}: no face found")
    if out_path is not None:
        write_image(out_path, action.draw(image, faces))
    return media.image_record(item.name, image.shape, faces, detector.convention), len(faces)


def process_video(detector, outputs, item, action, detect_every=10, smooth=True):
    """Track faces through a video file or camera; one JSON record per frame. Returns the line to
    print and the number of frames with a face. Ctrl-C (or SIGTERM) stops a camera (the normal way
    to end it) and ends the whole run on a file; the frames written so far are kept, as a whole
    video (VideoWriter)."""
    video = item.video()
    tracker = FaceTracker(detector, fps=video.fps, detect_every=detect_every, smooth=smooth)
    try:
        if min(video.width, video.height) < 2:  # no video format holds such frames
            raise DataError(f"{item.name}: its frames are {video.width} x {video.height} pixels, "
                            f"too small for a face or a video")
        out_path = outputs.path_for(item.out_name, ".mp4", action.suffix)
        writer = VideoWriter(out_path, video.fps, video.width, video.height)
    except DataError:
        video.close()
        raise
    frames = with_faces = most_faces = 0
    progress = tqdm(video, total=video.frame_count or None, desc=os.path.basename(item.name),
                    unit="frame", disable=None, leave=False)
    try:
        for rgb in progress:
            media.check_stop()
            faces = tracker(rgb)
            writer.write(action.draw(rgb, faces))
            if outputs.json:  # no --json (filters.py never has one): no record to build per frame
                outputs.write_record(media.image_record(item.name, rgb.shape, faces, detector.convention,
                                                        frame=frames))
            frames, with_faces, most_faces = frames + 1, with_faces + bool(faces), max(most_faces, len(faces))
    except KeyboardInterrupt:
        if not isinstance(item.source, int):
            raise
        media.stop_requested.clear()  # the camera's end, not the run's
    finally:
        progress.close()
        video.close()
        writer.close()
    if video.truncated:
        raise DataError(f"{item.name}: the video ends after {frames} of its {video.frame_count} frames "
                        f"(a truncated file?); {out_path} holds the {frames} frames read")
    if action.need_faces and not with_faces:
        raise DataError(f"{item.name}: no face found in {frames} frames")
    return (f"{item.name}: {frames} frames, up to {most_faces} face{'s' * (most_faces != 1)} -> {out_path}",
            with_faces)


def astronaut():
    """The input when none is given: scikit-image's astronaut, a real face photo."""
    try:
        from skimage import data
    except ImportError:
        raise DataError("no input given, and the demo photo needs scikit-image "
                        "(pip install scikit-image); name an image, a folder or a video") from None
    return media.Input("image", "skimage.data.astronaut", "astronaut.jpg", data.astronaut())


# ---------------------------------------------------------------------------------------------
# Worker processes for still images.

_worker_detector = None


def start_worker(make_detector):
    """In each worker: one thread (the workers share the cores), Ctrl-C left to the main process
    (which stops the pool at the next input), then the worker's own detector. SIGTERM keeps its
    default, so that shutting the pool down ends the workers; one ended inside a write leaves no
    file under the output's name (write_image writes beside it, then renames)."""
    global _worker_detector
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads(1)
    _worker_detector = make_detector()


def worker_image_result(item, out_path, action):
    return image_result(_worker_detector, item, out_path, action)


def worker_pool(workers, make_detector):
    """A pool of `workers` processes, each running start_worker; forkserver, not fork: a fork of a
    process that has run PyTorch or onnxruntime threads can hang."""
    import multiprocessing
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=start_worker,
                               initargs=(make_detector,))


def wants_pool(paths, workers):
    """Worth starting workers: more than one worker, and a folder or several images named."""
    if workers <= 1:
        return False
    kinds = []
    for path in paths:
        try:
            kinds.append(media.input_kind(path))
        except DataError:
            continue
    return "folder" in kinds or kinds.count("image") > 1


# ---------------------------------------------------------------------------------------------
# The loop.

def done(function, *args):
    """function(*args) run now, as a finished Future: the same handling as a worker's result."""
    future = Future()
    try:
        future.set_result(function(*args))
    except (DataError, OSError, cv2.error) as error:
        future.set_exception(error)
    return future


def outcomes(items, detector, outputs, action, args, pool=None):
    """(input, line to print or the error it raised, faces) for every input, in input order. Images
    are named here, in order, and run here or in `pool`, at most twice its size ahead; a video
    waits for the images before it and is tracked here."""
    pending = deque()  # (item, out_path, future), input order
    ahead = 2 * args.workers if pool else 0

    def settle():
        item, out_path, future = pending.popleft()
        try:
            record, faces = future.result()
        except media.OutputError:
            raise
        except (DataError, OSError, cv2.error) as error:
            return item, error, 0
        outputs.write_record(record)
        return item, f"{item.name}: {faces} face{'s' * (faces != 1)} -> {out_path}", faces

    for item in items:
        media.check_stop()
        if isinstance(item, DataError) or item.kind != "image":
            while pending:
                yield settle()
        if isinstance(item, DataError):
            yield item, item, 0
        elif item.kind != "image":
            try:
                yield item, *process_video(detector, outputs, item, action, args.detect_every,
                                           smooth=not args.no_smooth)
            except media.OutputError:
                raise
            except (DataError, OSError, cv2.error) as error:
                yield item, error, 0
        else:
            try:
                out_path = outputs.path_for(item.out_name, action.image_ext, action.suffix)
            except media.OutputError:
                raise
            except DataError as error:
                out_path, future = None, Future()
                future.set_exception(error)
            else:
                future = (pool.submit(worker_image_result, item, out_path, action) if pool
                          else done(image_result, detector, item, out_path, action))
            pending.append((item, out_path, future))
            while len(pending) > ahead:
                yield settle()
    while pending:
        yield settle()


def run_inputs(args, detector, outputs, action, pool=None):
    """Process every input; report each bad one as one line on stderr and go on. A folder prints
    one summary line instead of a line per image. Returns the number of failures."""
    failures, folder, folder_counts = 0, None, [0, 0]

    def end_folder():
        if folder is not None:
            print(f"{folder}: {folder_counts[0]} images, {folder_counts[1]} faces -> {outputs.out_dir}")

    items = media.each_input(args.inputs, args.camera, default=astronaut)
    for item, line, faces in outcomes(items, detector, outputs, action, args, pool):
        if getattr(item, "folder", None) != folder:
            end_folder()
            folder, folder_counts = getattr(item, "folder", None), [0, 0]
        if isinstance(line, Exception):
            failures += 1
            tqdm.write(f"{action.program}: {line}", file=sys.stderr)
        elif folder is None:
            tqdm.write(line)
        else:
            folder_counts[0] += 1
            folder_counts[1] += faces
    end_folder()
    return failures


def add_input_options(parser, detect_every):
    """The options detect.py and filters.py share: inputs, output folder, model, video, workers."""
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders (searched recursively) or videos (mp4, avi, mov); "
                             "none: scikit-image's astronaut photo")
    parser.add_argument("--out", default="outputs", help="folder for the output images and videos")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                        help="run the network on PyTorch (.pt) or onnxruntime (.onnx, no PyTorch needed); "
                             "auto: onnxruntime when installed and its export matches the .pt")
    parser.add_argument("--model", default=None,
                        help="model file (default: the shipped model, facial_keypoints/saved_models/"
                             "keypoints_model.pt or its .onnx export)")
    parser.add_argument("--convention", default=None, choices=sorted(TWO_HEAD_CONVENTIONS),
                        help="whose labelling the keypoints follow, the model's head for it: 300w (300-W's, "
                             "what other tools use) or course (the course data's); default: 300w when the "
                             "model has that head, else the model's only one")
    parser.add_argument("--camera", type=int, default=None, metavar="N", help="read camera N (Ctrl-C stops)")
    parser.add_argument("--detect-every", type=int, default=detect_every, metavar="K",
                        help="video: run the face detector every K frames, track in between")
    parser.add_argument("--no-smooth", action="store_true", help="video: no temporal smoothing")
    parser.add_argument("--face-detector", choices=FACE_DETECTORS, default="blazeface",
                        help="blazeface (a small network, finds tilted heads in one pass) or haar "
                             "(OpenCV's Haar cascade, the course's)")
    parser.add_argument("--upright-only", action="store_true",
                        help="with --face-detector haar: no turned copies of the image, faster, misses "
                             "heads tilted more than ~15 degrees")
    parser.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                        help="processes for the still images of a folder or a list "
                             f"(default: the cores, at most {MAX_WORKERS}; 1: this process only)")


def check_input_options(parser, args):
    if args.detect_every < 1:
        parser.error("--detect-every must be >= 1")
    if args.camera is not None and args.camera < 0:
        parser.error(f"--camera {args.camera}: camera numbers start at 0")
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be 1 or more")
    if args.upright_only and args.face_detector != "haar":
        parser.error("--upright-only is for --face-detector haar: BlazeFace finds tilted heads in one pass")


def run(args, make_detector, action, json_path=None):
    """Load, then process every input; the exit status (1 if any input failed, 2 for a --convention
    the model has no head for, 130 on Ctrl-C or SIGTERM). detect.py and filters.py both end here.
    `make_detector` is picklable when --workers is above 1 (each worker calls it). Every output
    path is checked before the first input is read (Outputs). Ctrl-C and SIGTERM stop the
    run between inputs and video frames (media.stop_between_steps): the worker pool is shut down,
    and every file written is whole."""
    with media.stop_between_steps():
        try:
            detector = make_detector()  # here too: a bad model file is one error line, before any worker
            protected = [detector.backend_path, args.model, SHIPPED_MODELS]
            outputs = Outputs(args.out, json_path, args.inputs, protected)
        except ConventionError as error:  # the option is at fault, not the model: as the parser's errors
            print(f"{action.program}: {error}", file=sys.stderr)
            return 2
        except (DataError, OSError) as error:
            print(f"{action.program}: {error}", file=sys.stderr)
            return 1
        try:
            status, message, started = run_outputs(args, make_detector, detector, outputs, action)
        except BaseException:  # a bug, with its traceback: --json as it was, no temporary file left
            outputs.close(keep=False)
            raise
        try:
            outputs.close(keep=started)
        except media.OutputError as error:
            status, message = 1, message or str(error)
    if message:
        print(f"{action.program}: {message}", file=sys.stderr)
    elif json_path:
        print(f"keypoints: {json_path}")
    return status


def run_outputs(args, make_detector, detector, outputs, action):
    """run's work once its outputs are reserved: (exit status, the error line or None, whether
    any input was started)."""
    pool = None
    try:
        media.check_stop()
        if wants_pool(args.inputs, args.workers):
            pool = worker_pool(args.workers, make_detector)
    except OSError as error:
        return 1, str(error), False
    except KeyboardInterrupt:
        return 130, "interrupted before any input was read", False
    try:
        failures = run_inputs(args, detector, outputs, action, pool)
        return (1 if failures else 0), None, True
    except KeyboardInterrupt:
        return 130, "interrupted; the files written so far are complete", True
    except media.OutputError as error:
        return 1, str(error), True
    except BrokenProcessPool:
        if media.stop_requested.is_set():  # the signal reached the workers too
            return 130, "interrupted; the files written so far are complete", True
        return 1, "a worker process died (out of memory?); try fewer --workers", True
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
