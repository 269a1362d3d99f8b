"""get_data.py: download from a local HTTP server, copy from a folder or zip, verify, never leave
half a dataset behind."""

import filecmp
import functools
import http.server
import os
import subprocess
import sys
import threading
import zipfile

import pytest
from conftest import write_course_dataset

import get_data


@pytest.fixture
def source(tmp_path):
    """A tiny dataset in the course layout: (folder, expected row counts)."""
    root = tmp_path / "source"
    return str(root), write_course_dataset(str(root), n_train=3, n_test=2, extra_test=1)


def make_zip(folder, zip_path, prefix=""):
    """Zip a folder, its contents under `prefix` (the course zip may nest them, e.g. data/)."""
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, _, files in os.walk(folder):
            for name in sorted(files):
                path = os.path.join(root, name)
                archive.write(path, os.path.join(prefix, os.path.relpath(path, folder)))
        archive.writestr("__MACOSX/._training_frames_keypoints.csv", b"mac metadata")
    return str(zip_path)


@pytest.fixture
def http_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1 (a free port); yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(QuietHandler, directory=str(www))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", www
    server.shutdown()
    server.server_close()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def same_tree(a, b):
    """True when folders a and b hold the same files with the same bytes."""
    comparison = filecmp.dircmp(a, b)
    if comparison.left_only or comparison.right_only or comparison.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(a, d), os.path.join(b, d))
                                               for d in comparison.common_dirs)


def leftovers(dest):
    """Anything get_data left beside dest other than dest itself (temporary folders)."""
    parent = os.path.dirname(dest)
    return [n for n in os.listdir(parent) if n.startswith(f".{os.path.basename(dest)}")]


def run_cli(*args):
    """get_data.main(args); returns the SystemExit message, or None when it succeeded."""
    try:
        get_data.main([*args, "--no-progress"])
    except SystemExit as e:
        return str(e.code)
    return None


@pytest.mark.parametrize("prefix", ["", "data"])
def test_download_from_local_server(source, http_server, tmp_path, prefix, capsys):
    folder, counts = source
    url, www = http_server
    make_zip(folder, www / "train-test-data.zip", prefix)
    dest = str(tmp_path / "out" / "data")
    assert get_data.get_data(url=f"{url}/train-test-data.zip", dest=dest, expected_rows=counts,
                             progress=False) == dest
    assert same_tree(folder, dest), "the downloaded dataset differs from the source"
    assert not os.path.exists(os.path.join(dest, "__MACOSX"))
    assert leftovers(dest) == []
    assert "dataset ready" in capsys.readouterr().out

    # A second run leaves the complete dataset alone.
    mtime = os.stat(os.path.join(dest, "training_frames_keypoints.csv")).st_mtime_ns
    get_data.get_data(url=f"{url}/missing.zip", dest=dest, expected_rows=counts, progress=False)
    assert "left alone" in capsys.readouterr().out
    assert os.stat(os.path.join(dest, "training_frames_keypoints.csv")).st_mtime_ns == mtime


def test_download_via_cli_with_progress_bar(source, http_server, tmp_path, capsys):
    folder, counts = source
    url, www = http_server
    make_zip(folder, www / "archive.zip")
    dest = str(tmp_path / "data")
    get_data.main(["--url", f"{url}/archive.zip", "--dest", dest,
                   "--training-rows", str(counts["training"]), "--test-rows", str(counts["test"])])
    assert same_tree(folder, dest)
    assert "downloading archive.zip" in capsys.readouterr().err  # tqdm's bar


def test_http_error_is_one_line(http_server, tmp_path):
    url, _ = http_server
    dest = str(tmp_path / "data")
    message = run_cli("--url", f"{url}/nope.zip", "--dest", dest)
    assert message.startswith("get_data.py: ") and "404" in message and "\n" not in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_corrupt_zip_fails_and_leaves_nothing(source, http_server, tmp_path):
    folder, counts = source
    url, www = http_server
    zip_path = make_zip(folder, www / "archive.zip")
    with zipfile.ZipFile(zip_path) as archive:  # flip bytes inside the first member's data
        info = archive.infolist()[0]
        offset = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 5
    with open(zip_path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    dest = str(tmp_path / "data")
    message = run_cli("--url", f"{url}/archive.zip", "--dest", dest,
                      "--training-rows", str(counts["training"]), "--test-rows", str(counts["test"]))
    assert message is not None and "corrupt zip" in message, message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_not_a_zip_fails_and_leaves_nothing(tmp_path):
    fake = tmp_path / "train-test-data.zip"
    fake.write_bytes(b"<html>Access denied</html>")
    dest = str(tmp_path / "data")
    message = run_cli("--from", str(fake), "--dest", dest)
    assert message is not None and "train-test-data.zip" in message and "corrupt zip" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_missing_image_fails_and_leaves_nothing(source, http_server, tmp_path):
    folder, counts = source
    url, www = http_server
    os.remove(os.path.join(folder, "training", "Person_training_01.jpg"))
    make_zip(folder, www / "archive.zip")
    dest = str(tmp_path / "data")
    message = run_cli("--url", f"{url}/archive.zip", "--dest", dest,
                      "--training-rows", str(counts["training"]), "--test-rows", str(counts["test"]))
    assert message is not None and "training/Person_training_01.jpg" in message and "missing" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_wrong_row_count_fails(source, tmp_path):
    folder, counts = source
    dest = str(tmp_path / "data")
    message = run_cli("--from", folder, "--dest", dest, "--training-rows", "3462", "--test-rows", "770")
    assert message is not None and "training_frames_keypoints.csv has 3 rows, expected 3462" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_from_folder_and_from_zip(source, tmp_path):
    folder, counts = source
    rows = ["--training-rows", str(counts["training"]), "--test-rows", str(counts["test"])]
    (tmp_path / "source" / "README.md").write_text("not part of the layout")
    assert run_cli("--from", folder, "--dest", str(tmp_path / "a"), *rows) is None
    assert sorted(os.listdir(tmp_path / "a")) == ["test", "test_frames_keypoints.csv", "training",
                                                  "training_frames_keypoints.csv"]
    assert same_tree(os.path.join(folder, "training"), str(tmp_path / "a" / "training"))
    assert same_tree(os.path.join(folder, "test"), str(tmp_path / "a" / "test"))

    zip_path = make_zip(folder, tmp_path / "course.zip", prefix="data")
    assert run_cli("--from", zip_path, "--dest", str(tmp_path / "b"), *rows) is None
    assert same_tree(folder, str(tmp_path / "b"))


def test_from_read_only_folder_gives_a_writable_copy(source, tmp_path):
    folder, counts = source
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
    dest = str(tmp_path / "data")
    get_data.get_data(folder, dest=dest, expected_rows=counts, progress=False)
    assert os.access(os.path.join(dest, "training_frames_keypoints.csv"), os.W_OK)


def test_fills_an_empty_dest_but_refuses_a_foreign_one(source, tmp_path):
    folder, counts = source
    empty = tmp_path / "empty"
    empty.mkdir()
    get_data.get_data(folder, dest=str(empty), expected_rows=counts, progress=False)
    assert same_tree(os.path.join(folder, "training"), str(empty / "training"))

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(get_data.DataError, match="not the course dataset"):
        get_data.get_data(folder, dest=str(foreign), expected_rows=counts, progress=False)
    assert os.listdir(foreign) == ["notes.txt"]


def test_incomplete_existing_dataset_is_reported_not_touched(source, tmp_path):
    folder, counts = source
    dest = str(tmp_path / "data")
    get_data.get_data(folder, dest=dest, expected_rows=counts, progress=False)
    os.remove(os.path.join(dest, "test", "Person_test_00.jpg"))
    with pytest.raises(get_data.DataError, match="test/Person_test_00.jpg .*incomplete"):
        get_data.get_data(folder, dest=dest, expected_rows=counts, progress=False)
    assert not os.path.exists(os.path.join(dest, "test", "Person_test_00.jpg"))


def test_interrupted_run_leaves_nothing(source, tmp_path, monkeypatch):
    folder, counts = source
    dest = str(tmp_path / "data")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(get_data, "verify", interrupt)  # Ctrl-C after the copy, before the rename
    message = run_cli("--from", folder, "--dest", dest)
    assert message is not None and "interrupted" in message
    assert not os.path.exists(dest) and leftovers(dest) == []


def test_missing_source_is_one_line_without_traceback(tmp_path):
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "get_data.py")
    result = subprocess.run([sys.executable, script, "--from", str(tmp_path / "nowhere"),
                             "--dest", str(tmp_path / "data")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"get_data.py: {tmp_path / 'nowhere'}: no such file or folder"
    assert not os.path.exists(tmp_path / "data")


def test_a_killed_run_leaves_a_work_folder_the_next_run_removes(source, tmp_path):
    """SIGKILL leaves no chance to clean up: the next run removes what the killed one left."""
    folder, counts = source
    dest = tmp_path / "data"
    stale = tmp_path / ".data-abc123.tmp"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "half.csv").write_text("a killed copy")
    keep = tmp_path / ".other-abc.tmp"  # another dataset's work folder is not ours to remove
    keep.mkdir()
    get_data.get_data(folder, dest=str(dest), expected_rows=counts, progress=False)
    assert not stale.exists() and keep.exists()
    assert leftovers(str(dest)) == []
