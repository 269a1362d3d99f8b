"""The unseen-people split: a committed list of people that no default training run sees, whose
images in both CSVs are `evaluate.py --split unseen`."""

import os

import cv2
import numpy as np
import pytest
import torch
from conftest import face_keypoints

import evaluate
import train
import train_checkpoint
import train_data
from facial_keypoints import media

UNSEEN = sorted(media.unseen_people())


def test_the_committed_list_is_a_tenth_of_the_people(dataset_dir):
    csv_files = [os.path.join(dataset_dir, f"{split}_frames_keypoints.csv") for split in ("training", "test")]
    names = [media.read_keypoints_csv(csv_file, arrays=True)[0] for csv_file in csv_files]
    people = {media.identity_of(name) for split in names for name in split}
    assert set(UNSEEN) <= people and len(UNSEEN) == round(0.1 * len(people))
    for split in names:  # each of them has images in both CSVs
        assert set(UNSEEN) <= {media.identity_of(name) for name in split}


def test_identity_is_the_name_before_the_frame_number():
    assert media.identity_of("Abdel_Aziz_Al-Hakim_02.jpg") == "Abdel_Aziz_Al-Hakim"
    assert media.identity_of("training/Abdel_Aziz_Al-Hakim_02.jpg") == "Abdel_Aziz_Al-Hakim"


@pytest.fixture
def data_with_unseen_people(tmp_path, monkeypatch):
    """A tiny dataset in which two of the listed unseen people and four others have two images
    each in both CSVs; FKP_DATA points at it."""
    rng = np.random.default_rng(0)
    people = UNSEEN[:2] + [f"Person_{i}" for i in range(4)]
    root = tmp_path / "data"
    header = "," + ",".join(str(i) for i in range(136))
    for split in ("training", "test"):
        (root / split).mkdir(parents=True)
        lines = [header]
        for i, person in enumerate(people * 2):
            name = f"{person}_{i:02d}.jpg"
            assert cv2.imwrite(str(root / split / name), (rng.random((96, 96, 3)) * 200).astype(np.uint8))
            keypoints = face_keypoints(center=(48, 50), scale=0.6) + rng.normal(0, 1, (68, 2))
            lines.append(name + "," + ",".join(repr(float(v)) for v in keypoints.ravel()))
        (root / f"{split}_frames_keypoints.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("FKP_DATA", str(root))
    return root, set(UNSEEN[:2])


def test_default_training_never_sees_the_unseen_people(data_with_unseen_people):
    root, unseen = data_with_unseen_people
    names, _ = media.read_keypoints_csv(root / "training_frames_keypoints.csv", arrays=True)
    for given, expected_left_out in (([], unseen), (["--unseen"], set())):
        args = train.parse_args(["--data", str(root), "--val-fraction", "0.25", *given])
        exclude = () if args.unseen else media.unseen_people()
        train_idx, val_idx = train_data.split_by_person(str(root / "training_frames_keypoints.csv"),
                                                   args.val_fraction, args.seed, exclude=exclude)
        used = {media.identity_of(names[i]) for i in train_idx + val_idx}
        assert not used & expected_left_out
        assert used | expected_left_out == {media.identity_of(n) for n in names}
        assert val_idx and not {media.identity_of(names[i]) for i in val_idx} & unseen
    args = train.parse_args(["--data", str(root), "--val-fraction", "0.25"])
    train_set, val_set = train.build_datasets(args)
    assert len(train_set) + len(val_set) == len(names) - 2 * 2  # two images each of two unseen people


def test_evaluate_unseen_takes_their_images_from_both_csvs(data_with_unseen_people, tmp_path):
    root, unseen = data_with_unseen_people
    csv_file, images_dir = evaluate.unseen_split_csv(str(tmp_path))
    names, keypoints = media.read_keypoints_csv(csv_file, images_dir, arrays=True)  # every image is there
    assert len(names) == 8 and {media.identity_of(n) for n in names} == unseen
    assert sum(n.startswith("training/") for n in names) == sum(n.startswith("test/") for n in names) == 4
    source = media.read_keypoints_csv(root / "test_frames_keypoints.csv", arrays=True)
    labels = dict(zip(*source, strict=True))
    for name, points in zip(names, keypoints, strict=True):
        if name.startswith("test/"):  # the labels come across unchanged
            np.testing.assert_array_equal(points, labels[name[len("test/"):]])
    m = evaluate.evaluate(protocol="labelled-box", split="unseen", progress=False)
    assert m["faces"] == 8


def test_an_unknown_split_is_refused(data_with_unseen_people):
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--split", "everyone"])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="unknown split"):
        evaluate.evaluate(split="everyone")


def test_a_checkpoint_from_before_the_split_resumes_as_a_run_on_everyone(data_with_unseen_people, tmp_path):
    root, _ = data_with_unseen_people
    out = str(tmp_path / "m.pt")
    common = ["--data", str(root), "--out", out, "--batch-size", "4", "--widths", "4,4,8,8,8",
              "--input-size", "32", "--val-fraction", "0.25"]
    train.main([*common, "--epochs", "1", "--unseen"])
    ckpt = torch.load(out + ".ckpt", weights_only=True)
    del ckpt["run_options"]["unseen"]  # as train.py wrote checkpoints before the split
    torch.save(ckpt, out + ".ckpt")
    assert train_checkpoint.read_checkpoint(out + ".ckpt")["run_options"]["unseen"] is True
    args = train.parse_args([*common, "--resume", "--epochs", "2"])
    train.resume_options(args, train_checkpoint.read_checkpoint(out + ".ckpt"))
    assert args.unseen is True
