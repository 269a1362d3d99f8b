"""Training: the network can learn, checkpoints resume where they stopped, saved models check out."""

import copy
import json
import os
import shlex

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_training_split

import train
import train_data
from data_load import PHOTO_GROUPS, PHOTO_WEIGHTS, FaceCropAugment
from facial_keypoints.face_crop import CROP_META
from models import ModelFileError, Net, build_model, inference_copy, load_model, save_model


def make_dataset(root, n_images=12, people=6, size=96, seed=0):
    """A tiny course-layout dataset: textured faces (a drawn ellipse, eyes, mouth) and labels."""
    rng = np.random.default_rng(seed)
    mean_face = np.stack([np.cos(np.linspace(0, 2 * np.pi, 68, endpoint=False)),
                          np.sin(np.linspace(0, 2 * np.pi, 68, endpoint=False))], 1)
    samples = []
    for i in range(n_images):
        image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        centre = size / 2 + rng.uniform(-5, 5, 2)
        keypoints = centre + mean_face * rng.uniform(22, 28) * [1, 1.2]
        cv2.ellipse(image, tuple(int(v) for v in centre), (26, 32), 0, 0, 360, (200, 180, 160), -1)
        for k in keypoints[::4]:
            cv2.circle(image, tuple(int(round(v)) for v in k), 2, (20, 20, 20), -1)
        samples.append((f"Person_{i % people}_{i:02d}.jpg", image, keypoints))
    return write_training_split(root, samples)


@pytest.fixture
def tiny_data(tmp_path):
    return make_dataset(tmp_path / "data")


def test_tiny_model_overfits_a_handful_of_samples(tiny_data):
    torch.manual_seed(0)
    args = train.parse_args(["--data", str(tiny_data), "--input-size", "48", "--no-augment",
                             "--val-fraction", "0"])
    train_set, _ = train.build_datasets(args)
    images = torch.stack([train_set[i][0] for i in range(8)])
    targets = torch.stack([torch.as_tensor(train_set[i][1]) for i in range(8)]).float()
    model = build_model("net", 48)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = train.wing_loss(model(images).view(-1, 68, 2), targets, scale=24)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], (losses[0], losses[-1])


def test_training_run_writes_checkpoint_and_resume_continues_from_same_step(tiny_data, tmp_path):
    out = str(tmp_path / "model.pt")
    common = ["--data", str(tiny_data), "--input-size", "48", "--batch-size", "4", "--out", out,
              "--val-fraction", "0.34"]
    first = train.main(common + ["--epochs", "1"])
    ckpt = torch.load(out + ".ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["step"] == first[-1]["step"] > 0
    assert os.path.isfile(out) and os.path.isfile(str(tmp_path / "model_curves.png"))

    resumed = train.main(common + ["--epochs", "2", "--resume"])
    assert [h["epoch"] for h in resumed] == [1, 2]
    assert resumed[0] == first[0]                        # history carried over, not retrained
    assert resumed[1]["step"] == 2 * first[-1]["step"]   # continued from the saved step
    model, meta = load_model(out)
    assert meta["steps"] == resumed[1]["step"] and meta["input_size"] == 48


def test_interrupted_and_resumed_run_ends_as_the_uninterrupted_one(tiny_data, tmp_path, monkeypatch, capsys):
    common = ["--data", str(tiny_data), "--input-size", "32", "--widths", "4,4,4,4,4",
              "--batch-size", "4", "--epochs", "3", "--val-fraction", "0.34"]
    whole, part = str(tmp_path / "whole.pt"), str(tmp_path / "part.pt")
    expected = train.main(common + ["--out", whole])

    real_step = train.train_step
    def ctrl_c_after_epoch_1(*args, **kwargs):  # noqa: E306
        if os.path.exists(part + ".ckpt"):
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)
    monkeypatch.setattr(train, "train_step", ctrl_c_after_epoch_1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train.main(common + ["--out", part])
    message = capsys.readouterr().err.strip()
    assert exit_info.value.code == 130 and "\n" not in message
    assert message.startswith("train.py: interrupted after epoch 1; resume with `python train.py --resume")
    # (one line: no progress bars on a stderr that is not a terminal)
    assert not os.path.exists(part)                                   # --out not written
    assert torch.load(part + ".ckpt", weights_only=True)["epoch"] == 1

    monkeypatch.setattr(train, "train_step", real_step)
    resume = shlex.split(message.split("`")[1])[2:]  # the command it printed
    resumed = train.main(resume)
    drop_seconds = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert drop_seconds(resumed) == drop_seconds(expected)
    (model, meta), (reference, _) = load_model(part), load_model(whole)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name                              # bit for bit
    assert meta["command_history"] == [train.parse_args(common + ["--out", part]).command,
                                       train.parse_args(resume).command]

    # A finished run's checkpoint does not stop a new run with the same --out (rerunning a
    # notebook); an unfinished one does.
    train.main(common + ["--out", part, "--epochs", "1"])
    assert torch.load(part + ".ckpt", weights_only=True)["run_options"]["epochs"] == 1


def test_shape_and_augment_options_reach_the_saved_model(tiny_data, tmp_path):
    out = str(tmp_path / "small.pt")
    args = ["--data", str(tiny_data), "--input-size", "48", "--batch-size", "4", "--epochs", "1",
            "--val-fraction", "0", "--widths", "8,8,16,16,32", "--rotation", "5", "--out", out]
    net_options = {"head": "regression", "hidden": 24}  # what Notebook 2 passes to compare heads
    history = train.main(args, max_steps=1, net_options=net_options)
    model, meta = load_model(out)
    assert history[-1]["step"] == 1
    assert meta["model_options"] == {"widths": [8, 8, 16, 16, 32], "hidden": 24, "head": "regression"}
    assert meta["command"] == shlex.join(["python", "train.py", *args]) + \
        f"  # max_steps=1, net_options={net_options!r}"                 # settings: after a comment
    assert model.conv1.weight.shape[0] == 8
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in Net(48).parameters())
    train_set, _ = train.build_datasets(train.parse_args(args))
    assert train_set.transform.rotation == 5.0


def test_at_most_twenty_options_and_the_removed_ones_are_gone(capsys):
    assert len(train.DEFAULTS) <= 20
    for gone in (["--people", "0.5"], ["--head", "heatmap"], ["--loss", "pip"], ["--limit", "8"],
                 ["--max-steps", "1"], ["--no-progress"], ["--photo-groups", "blur"], ["--dropout", "0.2"],
                 ["--hidden", "24"], ["--warmup-epochs", "0"], ["--workers", "2"], ["--checkpoint", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(gone)
        message = capsys.readouterr().err
        assert exit_info.value.code == 2 and message.count("\n") == 1, (gone, message)


def test_the_shipped_recipe_is_the_docstring_s():
    """The recipe in train.py's docstring trains the shipped model: its training commands are those
    the model records, in order (less --out, and less --init's path: the run before's model), and the
    data it names (the LFW faces pseudo_label.py labels, the 300-W faces) is what the model says it
    trained on."""
    _, meta = load_model("facial_keypoints/saved_models/keypoints_model.pt")
    recipe = train.__doc__.split("In ./data-wild:")[1].split("\n\n")[1]
    commands = [shlex.split(line) for line in recipe.strip().splitlines()]
    assert commands[0][:2] == ["python", "pseudo_label.py"]
    training = [command for command in commands if command[:2] == ["python", "train.py"]]
    assert ["export", "FKP_WILD=data-wild"] in commands[:commands.index(training[0])]

    def without_paths(command):
        return [word for i, word in enumerate(command) if "--out" not in command[i - 1:i + 1]
                and "--init" not in command[i - 1:i]]

    shipped = [shlex.split(command) for command in meta["command_history"]]
    assert [without_paths(c) for c in training] == [without_paths(c) for c in shipped]
    assert shipped[-1] == shlex.split(meta["command"])
    outs = [command[command.index("--out") + 1] for command in training]
    inits = [command[command.index("--init") + 1] for command in training[1:]]
    assert inits == outs[:-1]  # each run starts from the one before it
    args = train.parse_args(training[-1][2:])
    assert args.epochs == meta["epochs"] and train.parse_args(training[0][2:]).arch == meta["arch"]
    assert {"course", "lfw", "lfpw", "helen", "afw"} == set(meta["trained_on"])
    assert "non-commercial" in meta["data_terms"]


def test_photo_augment_is_checked_and_reaches_the_training_set_only(tiny_data, capsys):
    for bad in (["--photo-augment", "1.5"], ["--photo-augment", "-0.1"], ["--photo-augment", "nan"],
                ["--photo-augment", "strong"]):
        with pytest.raises(SystemExit) as exit_info:
            train.parse_args(bad)
        message = capsys.readouterr().err
        assert exit_info.value.code == 2 and message.count("\n") == 1, message
        assert message.startswith(f"train.py: argument {bad[0]}: {bad[1]!r} is not"), message

    common = ["--data", str(tiny_data), "--val-fraction", "0.34"]
    train_set, val_set = train.build_datasets(train.parse_args(common + ["--photo-augment", "0.5"]))
    used = {group: 0.5 * PHOTO_WEIGHTS[group] for group in ("lowres", "blur", "noise", "jpeg")}
    assert train_set.transform.photo_p == pytest.approx({**dict.fromkeys(PHOTO_GROUPS, 0.0), **used})
    assert not val_set.transform.train and set(val_set.transform.photo_p.values()) == {0.0}
    default_set, _ = train.build_datasets(train.parse_args(common))
    assert set(default_set.transform.photo_p.values()) == {0.0}


def old_run_options(**changes):
    """A checkpoint's run options as the train.py of commit ec9d21a wrote them (a default run)."""
    return {**{name: train.DEFAULTS.get(name) for name in train.RUN_OPTIONS}, "limit": 0, "max_steps": 0,
            "dropout": None, "hidden": None, "head": "integral", "warmup_epochs": 1, "people": 1.0,
            "photo_groups": list(PHOTO_GROUPS), **changes}


def test_old_checkpoints_resume_unless_a_removed_option_changed_their_run(tiny_data, tmp_path):
    out = str(tmp_path / "m.pt")
    common = ["--data", str(tiny_data), "--input-size", "32", "--widths", "4,4,4,4,4", "--batch-size", "4",
              "--val-fraction", "0.34", "--out", out]
    train.main(common + ["--epochs", "1"])
    ckpt = torch.load(out + ".ckpt", weights_only=True)
    old = old_run_options(**ckpt["run_options"])
    ckpt["rng"] = ckpt["rng"] * 2     # older checkpoints: one generator state per process (torchrun)
    del ckpt["init_saw_unseen"]        # and nothing on the people the --init weights saw
    torch.save({**ckpt, "run_options": old}, out + ".ckpt")
    history = train.main(common + ["--epochs", "2", "--resume"])   # the old options are left unused
    assert [h["epoch"] for h in history] == [1, 2]
    assert not load_model(out)[1]["trained_on_unseen_people"]

    refused = {"--people 0.5": dict(people=0.5), "--warmup-epochs 0": dict(warmup_epochs=0),
               "--head heatmap --loss pip": dict(head="heatmap", loss="pip"),
               "--photo-groups lowres,blur,lighting,noise,jpeg,occlusion": dict(photo_augment=1.0)}
    for options, changes in refused.items():
        args = train.parse_args(common + ["--resume"])
        with pytest.raises(train.TrainingError, match=f"continues a run with {options}, .*ec9d21a"):
            train.resume_options(args, {"run_options": {**old, **changes}})
    for changes in (dict(photo_augment=1.0, photo_groups=list(train.PHOTO_GROUPS_USED)),  # the groups now
                    dict(head="regression", hidden=24, dropout=0.2)):  # the network: in model_options
        args = train.parse_args(common + ["--resume"])
        train.resume_options(args, {"run_options": {**old, **changes}})

    ckpt = torch.load(out + ".ckpt", weights_only=True)
    torch.save({**ckpt, "run_options": {**old, "people": 0.25}}, out + ".ckpt")
    with pytest.raises(SystemExit) as exit_info:
        train.main(common + ["--epochs", "3", "--resume"])
    assert "--people 0.25" in str(exit_info.value) and "\n" not in str(exit_info.value)


def test_init_fine_tunes_a_saved_model_and_keeps_its_architecture(tiny_data, tmp_path):
    first, second = str(tmp_path / "first.pt"), str(tmp_path / "second.pt")
    common = ["--data", str(tiny_data), "--batch-size", "4", "--epochs", "1", "--val-fraction", "0"]
    train.main(common + ["--input-size", "48", "--widths", "8,8,16,16,32", "--out", first], max_steps=1)
    # The saved model's architecture wins over the (default) --input-size and --widths here.
    train.main(common + ["--init", first, "--lr", "1e-12", "--out", second], max_steps=1)
    (start, start_meta), (tuned, tuned_meta) = load_model(first), load_model(second)
    assert tuned_meta["input_size"] == 48 and tuned_meta["model_options"] == start_meta["model_options"]
    assert len(tuned_meta["command_history"]) == 2 and "--init" in tuned_meta["command_history"][1]
    assert tuned_meta["val_nme"] is None                      # --val-fraction 0: nothing validated
    save_model(start, str(tmp_path / "elsewhere.pt"), {key: start_meta[key] for key in
                                                       ("arch", "model_options", *CROP_META)})
    train.main(common + ["--init", str(tmp_path / "elsewhere.pt"), "--out", second], max_steps=1)
    assert len(load_model(second)[1]["command_history"]) == 1      # a model saved without commands
    # Started from, and (lr 1e-12) stayed at, the saved weights; batch-norm statistics do move.
    for a, b in zip(start.parameters(), tuned.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)

    with pytest.raises(SystemExit) as exit_info:
        train.main(common + ["--init", str(tmp_path / "absent.pt"), "--out", second])
    assert "no such model file" in str(exit_info.value) and "\n" not in str(exit_info.value)


def test_the_model_says_whether_its_weights_saw_the_unseen_people(tiny_data, tmp_path):
    """True with --unseen, and for every model whose --init weights did, resumed or not; None when
    the --init model does not say (a model from before the record)."""
    common = ["--data", str(tiny_data), "--input-size", "32", "--widths", "4,4,4,4,4", "--batch-size", "4",
              "--epochs", "1", "--val-fraction", "0"]
    path = {name: str(tmp_path / f"{name}.pt") for name in ("plain", "unseen", "tuned", "tuned_plain")}
    train.main(common + ["--out", path["plain"]])
    train.main(common + ["--unseen", "--out", path["unseen"]])
    train.main(common + ["--init", path["unseen"], "--out", path["tuned"]])
    train.main(common + ["--out", path["tuned"], "--epochs", "2", "--resume"])
    train.main(common + ["--init", path["plain"], "--out", path["tuned_plain"]])
    model, meta = load_model(path["plain"])
    del meta["trained_on_unseen_people"]
    save_model(model, str(tmp_path / "older.pt"), meta)
    path["tuned_older"] = str(tmp_path / "tuned_older.pt")
    train.main(common + ["--init", str(tmp_path / "older.pt"), "--out", path["tuned_older"]])
    seen = {name: load_model(p)[1]["trained_on_unseen_people"] for name, p in path.items()}
    assert seen == {"plain": False, "unseen": True, "tuned": True, "tuned_plain": False, "tuned_older": None}
    assert load_model(path["tuned"])[1]["steps"] == 2 * load_model(path["plain"])[1]["steps"]  # resumed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where PyTorch sees no GPU")
def test_device_cuda_without_a_gpu_is_a_one_line_error(tiny_data, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", str(tiny_data), "--device", "cuda", "--out", str(tmp_path / "m.pt")])
    assert "no CUDA GPU" in str(exit_info.value)


def test_losses_are_zero_at_the_target_and_grow_with_error():
    target = torch.zeros(2, 68, 2)
    for name in ("wing", "mse", "l1"):
        loss = train.KeypointLoss(name, 112)
        assert loss(target.view(2, 136), target).item() == 0
        assert 0 < loss(target + 0.01, target).item() < loss(target + 0.1, target).item()
    assert train.KeypointLoss("mse", 112)(target + 0.1, target).item() == pytest.approx(0.01)
    assert train.KeypointLoss("l1", 112)(target + 0.1, target).item() == pytest.approx(0.1)
    for unknown in ("huber", "pip"):
        with pytest.raises(ValueError):
            train.KeypointLoss(unknown, 112)


def test_split_holds_out_whole_people(tiny_data):
    train_idx, val_idx = train_data.split_by_person(str(tiny_data / "training_frames_keypoints.csv"), 0.34, 0)
    names = pd.read_csv(tiny_data / "training_frames_keypoints.csv").iloc[:, 0]
    people = lambda idx: {names[i].rsplit("_", 1)[0] for i in idx}  # noqa: E731
    assert val_idx and train_idx and not people(train_idx) & people(val_idx)
    assert sorted(train_idx + val_idx) == list(range(len(names)))


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", str(tmp_path / "nowhere")])
    assert "no such file" in str(exit_info.value) and "\n" not in str(exit_info.value)


def test_model_file_checks(tmp_path):
    path = str(tmp_path / "m.pt")
    meta = {"arch": "net", "input_size": 112, "crop_margin": 1.3, "crop_shift": 0.1}
    save_model(Net(), path, meta)
    model, loaded = load_model(path)
    assert loaded == meta and not model.training

    save_model(Net(widths=(8, 16, 24, 48, 96)), path, meta)
    with pytest.raises(ModelFileError, match="does not match the architecture .*size mismatch"):
        load_model(path)
    save_model(Net(), path, {"arch": "net", "input_size": 112, "crop_shift": 0.1})
    with pytest.raises(ModelFileError, match="lacks crop_margin"):
        load_model(path)
    diverged = Net()
    with torch.no_grad():
        diverged.conv1.weight[0, 0, 0, 0] = float("inf")
    save_model(diverged, path, meta)
    with pytest.raises(ModelFileError, match="non-finite weights"):
        load_model(path)
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(str(tmp_path / "junk.pt"))
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(str(tmp_path / "absent.pt"))


def test_inference_copy_merges_batch_norm_and_predicts_the_same():
    torch.manual_seed(0)
    model = Net()
    model.train()
    for _ in range(3):  # batch-norm running statistics away from their initial values
        model(torch.rand(8, 1, 112, 112) * 3)
    model.eval()
    fast = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 7  # original untouched
    x = torch.rand(4, 1, 112, 112)
    with torch.no_grad():
        expected = model(x)
        assert (expected - fast(x.contiguous(memory_format=torch.channels_last))).abs().max() < 1e-5
        dropped = copy.deepcopy(model)  # batch norm removed without merging: must differ
        for block in dropped.modules():
            for name, child in block.named_children():
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(block, name, torch.nn.Identity())
        assert (expected - dropped(x)).abs().max() > 1e-2


def test_shipped_model_loads_and_predicts_inside_the_crop(dataset_dir):
    model, meta = load_model("facial_keypoints/saved_models/keypoints_model.pt")
    assert os.path.getsize("facial_keypoints/saved_models/keypoints_model.pt") < 5_000_000
    frame = pd.read_csv(os.path.join(dataset_dir, "test_frames_keypoints.csv"))
    crop = FaceCropAugment(meta["input_size"], train=False)
    for i in range(5):
        gray = cv2.imread(os.path.join(dataset_dir, "test", frame.iloc[i, 0]), cv2.IMREAD_GRAYSCALE)
        image, target = crop(gray, frame.iloc[i, 1:].to_numpy(float).reshape(-1, 2))
        with torch.no_grad():
            pred = model(image[None])[0, meta["conventions"].index("course")].view(68, 2)
        assert torch.isfinite(pred).all() and pred.abs().max() < 1.0
        # a trained model lands near the labels (NME-scale check, loose so a better model passes too)
        assert (pred - target).norm(dim=1).mean() < 0.2


def test_net_trains_with_the_integral_head_unless_told(tiny_data, tmp_path):
    common = ["--data", str(tiny_data), "--input-size", "48", "--batch-size", "4", "--epochs", "1",
              "--val-fraction", "0"]
    heads = {}
    for name, net_options in (("default", {}), ("course", {"head": "regression"})):
        train.main(common + ["--widths", "4,4,8,8,8", "--out", str(tmp_path / f"{name}.pt")], max_steps=1,
                   net_options=net_options)
        model, meta = load_model(str(tmp_path / f"{name}.pt"))
        assert meta["model_options"]["head"] == model.head_type
        heads[name] = model.head_type
    assert heads == {"default": train.NET_HEAD, "course": "regression"} and train.NET_HEAD == "integral"
    train.main(common + ["--arch", "naimishnet", "--out", str(tmp_path / "naimish.pt")], max_steps=1)
    assert "head" not in load_model(str(tmp_path / "naimish.pt"))[1]["model_options"]  # no choice of heads


NOTEBOOK_2 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "2. Define the Network Architecture.ipynb")


def notebook_cells(path, tag):
    """The sources of a notebook's code cells that carry `tag` in their metadata, in order."""
    with open(path) as f:
        cells = json.load(f)["cells"]
    return ["".join(c["source"]) for c in cells if tag in c["metadata"].get("tags", [])]


def test_notebook_2_trains_the_weights_of_train_py(tiny_data, tmp_path):
    """Notebook 2's course-style cells (FacialKeypointsDataset with its data_transform, DataLoader,
    criterion, optimizer, train_net, save) and `python train.py` with the same options end with the
    same losses, validation NME and weights. The cells run as the notebook has them; only its
    TRAIN_ARGV and TRAIN_SETTINGS cell ("run-options") is replaced by these."""
    options = ["--data", str(tiny_data), "--input-size", "48", "--widths", "4,4,8,8,8", "--batch-size", "4",
               "--epochs", "2", "--val-fraction", "0.34", "--device", "cpu"]
    cli_history = train.main(options + ["--out", str(tmp_path / "cli.pt")], max_steps=3)
    cells = notebook_cells(NOTEBOOK_2, "train-path")
    assert any("transform=data_transform" in source for source in cells)
    namespace = {"TRAIN_ARGV": options + ["--out", str(tmp_path / "notebook.pt")],
                 "TRAIN_SETTINGS": {"max_steps": 3}}
    for source in cells:
        exec(compile(source, NOTEBOOK_2, "exec"), namespace)

    def numbers(history):  # the seconds differ, nothing else may
        return [(h["epoch"], h["step"], h["loss"], h["val_nme"], h["lr"]) for h in history]

    assert numbers(namespace["history"]) == numbers(cli_history) and cli_history[-1]["step"] == 3
    cli_model, cli_meta = load_model(str(tmp_path / "cli.pt"))
    notebook_model, notebook_meta = load_model(str(tmp_path / "notebook.pt"))
    cli_weights, notebook_weights = cli_model.state_dict(), notebook_model.state_dict()
    assert cli_weights.keys() == notebook_weights.keys()
    assert all(torch.equal(cli_weights[k], notebook_weights[k]) for k in cli_weights)
    assert notebook_meta["model_options"] == cli_meta["model_options"] == {"widths": [4, 4, 8, 8, 8],
                                                                           "head": train.NET_HEAD}
