"""cluster.py on Dask: a local 2-worker cluster, and an existing cluster started with the `dask scheduler`
and `dask worker` commands README's "Detect on a cluster" gives, write the JSON Lines file detect.py
writes for the same folder, byte for byte; a bad image is one line on stderr, a missing input or a
missing engine one line too."""

import json
import os
import subprocess
import sys
import time

import cv2
import distributed
import numpy as np
import pytest
from conftest import box_centre
from skimage import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_PY = os.path.join(ROOT, "cluster.py")
DETECT_PY = os.path.join(ROOT, "detect.py")
DASK = os.path.join(os.path.dirname(sys.executable), "dask")
# One thread per process, as on a small machine; the workers import the project from the repository.
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
BAD_LINE = "photos/d_corrupt.jpg: not a readable image (corrupt or truncated file)"


def run(script, *args, cwd):
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A folder of three astronauts (as taken, mirrored, smaller, in a subfolder) and a corrupt
    file, and detect.py's JSON Lines for it: (working folder, the JSON's bytes, its faces)."""
    cwd = tmp_path_factory.mktemp("cluster")
    folder = cwd / "photos"
    (folder / "sub").mkdir(parents=True)
    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(folder / "a.jpg"), bgr)
    assert cv2.imwrite(str(folder / "b_mirrored.png"), bgr[:, ::-1])
    small = cv2.resize(bgr, (384, 384), interpolation=cv2.INTER_AREA)
    assert cv2.imwrite(str(folder / "sub" / "c_small.jpg"), small)
    (folder / "d_corrupt.jpg").write_bytes(b"not a JPEG")
    done = run(DETECT_PY, "photos", "--workers", 1, "--json", "detect.jsonl", "--out", "out", cwd=cwd)
    assert done.returncode == 1 and done.stderr.strip() == f"detect.py: {BAD_LINE}", done.stderr
    expected = (cwd / "detect.jsonl").read_bytes()
    records = [json.loads(line) for line in expected.splitlines()]
    names = ["photos/a.jpg", "photos/b_mirrored.png", "photos/sub/c_small.jpg"]
    assert [r["image"] for r in records] == names
    assert all(len(r["faces"]) == 1 for r in records)
    for record, centre in zip(records, [(224, 113), (288, 113), (168, 85)], strict=True):
        assert np.linalg.norm(box_centre(record["faces"][0]["box"]) - centre) < 10, record["image"]
    return cwd, expected, sum(len(r["faces"]) for r in records)


def check_run(done, cwd, json_name, expected, faces):
    """The run found detect.py's faces, wrote its file and said one line about the corrupt file."""
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"cluster.py: {BAD_LINE}"]
    assert f"3 images, {faces} faces on 2 workers" in done.stdout
    assert (cwd / json_name).read_bytes() == expected
    assert not list(cwd.glob(f".{json_name}.*"))  # the temporary file was renamed


def test_local_cluster_writes_what_detect_writes(photos):
    cwd, expected, faces = photos
    done = run(CLUSTER_PY, "photos", "--workers", 2, "--chunk-size", 1, "--json", "local.jsonl", cwd=cwd)
    check_run(done, cwd, "local.jsonl", expected, faces)


def test_existing_cluster_from_a_list(photos):
    """`dask scheduler` and `dask worker` as README starts them on N machines, here on one; the
    images named in a --list file as the folder's expansion names them."""
    cwd, expected, faces = photos
    (cwd / "paths.txt").write_text("# the folder, listed\nphotos/a.jpg\nphotos/b_mirrored.png\n\n"
                                   "photos/d_corrupt.jpg\nphotos/sub/c_small.jpg\n")
    address_file = cwd / "scheduler.json"
    common = ["--no-dashboard", "--scheduler-file", str(address_file)]
    processes = [subprocess.Popen([DASK, *command, *common], env=ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
                 for command in (["scheduler", "--host", "127.0.0.1", "--port", "0"],
                                 ["worker", "--nworkers", "2", "--nthreads", "1"])]
    address = None
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(address_file.read_text())["address"]
        done = run(CLUSTER_PY, "--list", "paths.txt", "--scheduler", address, "--chunk-size", 2,
                   "--json", "existing.jsonl", cwd=cwd)
    finally:
        if address:  # the quick way down (SIGTERM: the workers take 8 s)
            with distributed.Client(address, timeout=10) as client:
                client.shutdown()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    check_run(done, cwd, "existing.jsonl", expected, faces)


def test_missing_input_is_one_line(tmp_path):
    done = run(CLUSTER_PY, "no_such.jpg", "--json", "k.jsonl", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["cluster.py: no_such.jpg: no such file or folder"]


def test_missing_engine_is_one_line(tmp_path):
    """Without Dask (its import blocked): one line saying what to install, and no file written."""
    blocked = ("import runpy, sys; sys.modules['distributed'] = None; "
               "sys.argv = ['cluster.py', '.', '--json', 'k.jsonl']; "
               f"runpy.run_path({CLUSTER_PY!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", blocked], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "cluster.py: the cluster engine is not installed: "
        "pip install -r requirements-cluster.txt (Dask's distributed scheduler)"]
    assert not (tmp_path / "k.jsonl").exists()


def test_the_convention_reaches_the_workers_detector():
    """--convention is one of the detector's options: the workers read the head it names."""
    sys.path.insert(0, ROOT)
    import cluster
    assert cluster.parse_args(["photos", "--json", "x.jsonl"]).worker_detector.convention is None
    args = cluster.parse_args(["photos", "--json", "x.jsonl", "--convention", "course"])
    assert args.detector.convention == args.worker_detector.convention == "course"
