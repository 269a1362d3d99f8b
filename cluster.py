"""detect.py's JSON Lines for many images, on a Dask cluster (`pip install -r requirements-cluster.txt`).

    python cluster.py photos/ --json faces.jsonl                  # a local cluster, one process per core
    python cluster.py photos/ a.jpg --list paths.txt --json faces.jsonl --workers 2 --chunk-size 8
    python cluster.py /shared/photos --json faces.jsonl --scheduler tcp://HOST:8786   # an existing cluster

Inputs are images and folders as for detect.py, and --list files of paths, one per line (blank and
# lines skipped). Each worker thread builds the detector once (detect.py's --backend, --model,
--face-detector, --upright-only, --no-flip and Haar options) and runs runner.image_result on
chunks of images; this process writes one JSON line per image in input order to a temporary file
that becomes --json when the run is complete: the file `detect.py --json` writes for the same
inputs. A bad image is one line on stderr (exit status 1). Workers read the images at the
absolute paths this machine sees (on many machines: a shared filesystem), and a worker whose model
file differs from this one's stops the run.
"""

import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from copy import copy
from dataclasses import replace
from functools import partial

import cv2
from tqdm import tqdm

from facial_keypoints import detect, media, outputs, runner
from facial_keypoints.backends import ConventionError, limit_threads, sha256
from facial_keypoints.media import DataError, OneLineParser, one_line

try:
    import distributed
except ImportError:  # the optional extra: main() says what to install
    distributed = None

PROGRAM = "cluster.py"
INSTALL = "pip install -r requirements-cluster.txt"
ENVIRONMENT = (f"every machine of the cluster (scheduler and workers) needs the repository on PYTHONPATH "
               f"or `pip install .`, and {INSTALL}")
# Detector options handed to detect.parse_args, which checks them and gives their defaults.
DETECTOR_OPTIONS = {"--backend": "{auto,torch,onnx}", "--model": "FILE",
                    "--face-detector": "{blazeface,haar}", "--scale-factor": "X",
                    "--min-neighbors": "N", "--min-size": "PIXELS", "--upright-only": None, "--no-flip": None,
                    "--accurate": None, "--convention": "{300w,course}"}


def fingerprint(detector):
    """What must be the same on every worker for the same keypoints: the backend and its file."""
    return detector.backend_name, sha256(detector.backend_path)


class DetectorCache(distributed.WorkerPlugin if distributed else object):
    """On every worker (those that join later too): one thread for OpenCV and the model, as in
    runner.start_worker, and one detector per worker thread, built for its first chunk."""

    def __init__(self, make_detector):
        self.make_detector = make_detector

    def setup(self, worker):
        limit_threads(1)
        self.address, self.local = worker.address, threading.local()

    def detector(self):
        if not hasattr(self.local, "detector"):
            try:
                self.local.detector = self.make_detector()
            except (DataError, OSError) as error:
                raise DataError(f"worker {self.address}: {error}") from None
            self.local.fingerprint = fingerprint(self.local.detector)
        return self.local.detector, self.local.fingerprint


def detect_chunk(plugin_name, items, action):
    """On a worker: (its address, its model's fingerprint, a JSON record or an error line per image)."""
    cache = distributed.get_worker().plugins[plugin_name]
    detector, model = cache.detector()
    results = []
    for item in items:
        try:
            results.append(runner.image_result(detector, item, None, action)[0])
        except (DataError, OSError, cv2.error) as error:
            message = str(error)  # it names the absolute path read: name the image as detect.py does
            if message.startswith(item.source):
                message = item.name + message[len(item.source):]
            results.append(f"{PROGRAM}: {message}")
    return cache.address, model, results


def read_list(path):
    try:
        with open(path) as f:
            lines = [line.strip() for line in f]
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise DataError(f"--list {path}: cannot read it ({reason})") from None
    return [line for line in lines if line and not line.startswith("#")]


def work(paths, chunk_size):
    """The steps, in input order: an error line (str) per unusable input (media.each_input), else
    a chunk (list) of at most chunk_size consecutive images, each to be read at its absolute path."""
    steps, chunk = [], []
    for item in media.each_input(paths, progress=False):
        if not isinstance(item, DataError) and item.kind != "image":
            item = DataError(f"{item.name}: a video; {PROGRAM} does still images (detect.py tracks videos)")
        if isinstance(item, DataError):
            steps += [chunk] * bool(chunk) + [f"{PROGRAM}: {item}"]
            chunk = []
            continue
        chunk.append(replace(item, source=os.path.abspath(item.source)))
        if len(chunk) == chunk_size:
            steps, chunk = steps + [chunk], []
    return steps + [chunk] * bool(chunk)


def scheduler_problem(address):
    """Why --scheduler is not an address Dask can connect to, or None."""
    try:
        protocol, location = distributed.comm.parse_address(address)
        distributed.comm.registry.get_backend(protocol)  # ValueError for an unknown scheme
        port = distributed.comm.parse_host_port(location)[1] if protocol in ("tcp", "tls") else 1
    except ValueError as error:
        return f"--scheduler {address}: not a scheduler address like tcp://HOST:8786 ({one_line(error)})"
    if not 0 < port < 65536:
        return f"--scheduler {address}: port {port} is not a port number (1 to 65535)"
    return None


def reach_scheduler(address, timeout):
    """DataError at once when nothing listens at a tcp:// or tls:// --scheduler: Dask's client
    would retry until --timeout ran out."""
    protocol, location = distributed.comm.parse_address(address)
    if protocol not in ("tcp", "tls"):
        return
    try:
        socket.create_connection(distributed.comm.parse_host_port(location), timeout=timeout).close()
    except OSError as error:
        raise DataError(f"--scheduler {address}: cannot connect ({error.strerror or error})") from None


def waited(wait, seconds):
    """wait(timeout=...) in steps of at most a second, for `seconds` in all (then its TimeoutError):
    a stop request (Ctrl-C, SIGTERM: media.check_stop) ends the wait at the next step."""
    deadline = time.monotonic() + seconds
    while True:
        media.check_stop()
        step = min(1.0, deadline - time.monotonic())
        try:
            return wait(timeout=max(step, 0.001))
        except TimeoutError:
            if step < 1.0:
                raise


def start_client(args):
    """(client, local cluster or None): the --scheduler's cluster, or a local one of --workers processes."""
    logging.getLogger("distributed").setLevel(logging.ERROR)  # its warnings would bury our error lines
    media.check_stop()  # stopped already: start no cluster
    if not args.scheduler:
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        return distributed.Client(cluster), cluster
    reach_scheduler(args.scheduler, args.timeout)
    client = distributed.Client(args.scheduler, timeout=args.timeout)
    try:
        waited(partial(client.wait_for_workers, 1), args.timeout)
    except TimeoutError:
        client.close()
        raise DataError(f"{args.scheduler}: no worker in {args.timeout:g} s "
                        f"(start some: dask worker {args.scheduler})") from None
    except KeyboardInterrupt:
        client.close()
        raise
    return client, None


def results_in_order(client, steps, plugin_name, action):
    """(step, its result) in input order, with at most 2 chunks per worker thread on the cluster."""
    pending, steps = deque(), deque(steps)
    while steps or pending:
        while steps and len(pending) < 2 * max(1, sum(client.nthreads().values())):
            step = steps.popleft()
            pending.append((step, None if isinstance(step, str) else
                            client.submit(detect_chunk, plugin_name, step, action, pure=False)))
        step, future = pending.popleft()
        yield step, None if future is None else waited(future.result, math.inf)


def write_results(results, out, model, progress):
    """Each (step, result) as JSON lines into `out` (outputs.JsonLinesFile) and error lines to stderr:
    (images, faces, failures)."""
    images = faces = failures = 0
    for step, result in results:
        address, worker_model, records = result or (None, model, [step])
        if worker_model != model:
            raise DataError(f"worker {address} runs {worker_model[0]} on a model file with SHA-256 "
                            f"{worker_model[1][:12]}..., this machine {model[0]} on "
                            f"{model[1][:12]}...: every machine needs the same model")
        for record in records:
            if isinstance(record, str):
                failures += 1
                tqdm.write(record, file=sys.stderr)
            else:
                out.write(record)  # a full disk: media.OutputError, the run stops
                images, faces = images + 1, faces + len(record["faces"])
        progress.update(len(records) * (result is not None))
    return images, faces, failures


def run(args, steps, out, model):
    """The steps on the cluster, JSON lines into `out` and error lines to stderr; the failures."""
    client, cluster = start_client(args)
    plugin_name, registered = f"facial-keypoints-{uuid.uuid4().hex}", False
    try:
        plugin = DetectorCache(partial(detect.build_detector, args.worker_detector))
        try:
            client.register_plugin(plugin, plugin_name)
        except Exception as error:  # a worker that cannot unpickle it: only its text comes back
            raise DataError(f"a worker cannot set up the detector ({one_line(error)}): "
                            f"{ENVIRONMENT}") from None
        registered = True
        action = runner.Action(media.draw_faces, program=PROGRAM)
        total = sum(len(step) for step in steps if not isinstance(step, str))
        progress = tqdm(total=total, unit="image", disable=None)
        images, faces, failures = write_results(results_in_order(client, steps, plugin_name, action),
                                                out, model, progress)
        progress.close()
        workers = len(client.nthreads())
    finally:
        if registered and cluster is None:
            client.unregister_worker_plugin(plugin_name)
        client.close()
        if cluster is not None:
            cluster.close()
    print(f"{images} images, {faces} faces on {workers} worker{'s' * (workers != 1)}")
    return failures


def parse_args(argv=None):
    parser = OneLineParser(description="detect.py's JSON Lines for many images, on a Dask cluster.")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="images and folders (searched recursively)")
    parser.add_argument("--list", action="append", default=[], metavar="FILE",
                        help="a text file of image (or folder) paths, one per line; may be repeated")
    parser.add_argument("--json", required=True, metavar="FILE", help="the JSON Lines file to write")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="an existing cluster's scheduler, e.g. tcp://host:8786 (default: a local one)")
    parser.add_argument("--workers", type=int, metavar="N", help="local cluster: N processes of one thread "
                        f"(default: the cores, at most {runner.MAX_WORKERS})")
    parser.add_argument("--chunk-size", type=int, default=8, metavar="K", help="images per task (default 8)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                        help="seconds to wait for the --scheduler and its first worker (default 30)")
    group = parser.add_argument_group("the detector: detect.py's options (detect.py --help), its defaults")
    for option, metavar in DETECTOR_OPTIONS.items():
        group.add_argument(option, **{"metavar": metavar} if metavar else {"action": "store_true"})
    args = parser.parse_args(argv)
    if args.chunk_size < 1:
        parser.error(f"--chunk-size {args.chunk_size}: must be 1 or more")
    if not 0 < args.timeout < math.inf:  # NaN too
        parser.error(f"--timeout {args.timeout:g}: give a number of seconds above 0")
    problem = args.scheduler and distributed and scheduler_problem(args.scheduler)
    if problem:
        parser.error(problem)
    if args.scheduler and args.workers is not None:
        parser.error("--workers sizes a local cluster; with --scheduler the cluster's own workers run")
    args.workers = runner.default_workers() if args.workers is None else args.workers
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be 1 or more")
    given = {option: getattr(args, option[2:].replace("-", "_")) for option in DETECTOR_OPTIONS}
    args.detector = detect.parse_args(["--workers=1"] + [option if value is True else f"{option}={value}"
                                                         for option, value in given.items() if value])
    args.worker_detector = copy(args.detector)  # the workers' current folders may differ from ours
    args.worker_detector.model = args.model and os.path.abspath(args.model)
    return args


def main(argv=None):
    """Run the command line; returns the exit status (1 if any input failed, 2 for a --convention the
    model has no head for, 130 when stopped)."""
    args = parse_args(argv)
    with media.stop_between_steps():  # Ctrl-C and SIGTERM: the run stops and removes its temporary file
        return write_json(args)


def write_json(args):
    """main's work: the inputs on the cluster, into --json; the exit status."""
    json_path, out, started = args.json, None, time.perf_counter()
    try:
        paths = args.inputs + [path for list_file in args.list for path in read_list(list_file)]
        if not paths:
            raise DataError("no input: name images or folders, or --list FILE")
        if distributed is None:
            raise DataError(f"the cluster engine is not installed: {INSTALL} (Dask's distributed scheduler)")
        detector = detect.build_detector(args.detector)  # a bad model is one line, before any cluster
        protected = [detector.backend_path, args.model, outputs.SHIPPED_MODELS]
        # its records go to a temporary file, put in place of json_path only by a complete run
        out = outputs.JsonLinesFile("--json", json_path, paths, protected)
        steps = work(paths, args.chunk_size)
        if any(not isinstance(step, str) for step in steps):
            failures = run(args, steps, out, fingerprint(detector))
        else:  # nothing to detect: the error lines, and the empty file detect.py writes too
            failures = len(steps)
            print(*steps, sep="\n", file=sys.stderr)
        out.close()
    except ConventionError as error:  # an option the model cannot honour: a usage error, as in detect.py
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 2
    except (DataError, OSError, TimeoutError) as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted; {json_path} not written", file=sys.stderr)
        return 130
    except Exception as error:  # the cluster's own failures; anything else is a bug, with its traceback
        if isinstance(error, ModuleNotFoundError) or one_line(error).startswith("Error during deserial"):
            line = f"the scheduler or a worker cannot load the task ({one_line(error)}): {ENVIRONMENT}"
        elif type(error).__module__.split(".")[0] == "distributed":  # a worker killed, the scheduler lost
            line = f"the cluster failed: {type(error).__name__}: {one_line(error)}"
        else:
            raise
        print(f"{PROGRAM}: {line}", file=sys.stderr)
        return 1
    finally:
        if out is not None:
            out.close(keep=False)  # a run that stopped: json_path as it was (after close(): nothing to do)
    print(f"keypoints: {json_path} in {time.perf_counter() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
