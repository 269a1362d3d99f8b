"""A train.py run's checkpoint, <out>.ckpt: what it holds (checkpoint_of), reading one back and
checking it is one of this train.py's, the network and progress it continues, and the random
generators it saves and restores, so that a resumed run ends with the weights of a run never
interrupted. train.py writes it atomically at the end of every epoch.
"""

import os
import random
import warnings

import numpy as np
import torch

import models

# The options that define a run: a resumed run takes them from its checkpoint. The others say how
# to run it (where the data and files are, threads, device) and come from the command line.
RUN_OPTIONS = ("arch", "input_size", "widths", "init", "epochs", "batch_size", "loss", "lr", "weight_decay",
               "val_fraction", "unseen", "seed", "augment", "rotation", "photo_augment", "limit", "max_steps")
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "step", "history", "finished", "run_options", "arch",
                   "input_size", "model_options", "command_history", "rng")


class TrainingError(Exception):
    """A run that cannot start or go on (a checkpoint that does not fit, a diverged loss): one line."""


def seed_all(seed):
    """Seed every generator a run draws from: torch's, NumPy's and Python's."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(device):
    """The generators: torch (flips, colour), NumPy (crop boxes, rotations), Python's, the GPU's."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return dict(torch=torch.get_rng_state(), numpy=(name, keys.tolist(), position, has_gauss, gauss),
                python=random.getstate(),
                cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def set_rng_state(state, device):
    """Put back the generators rng_state saved, so that a resumed run draws what it would have."""
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def checkpoint_of(run):
    """What the checkpoint of a train.Run holds at the end of an epoch: its weights, optimizer and
    progress, the options and commands that made it, the random generators (taken after
    validation: it draws too) and where its first weights came from."""
    return dict(model=run.model.state_dict(), optimizer=run.optimizer.state_dict(),
                epoch=run.epoch, step=run.step, history=run.history, finished=run.done(),
                run_options=run.run_options, arch=run.args.arch, input_size=run.args.input_size,
                model_options=run.model_options, command_history=run.command_history,
                rng=[rng_state(run.device)], init_saw_unseen=run.init_saw_unseen, pretrained=run.pretrained)


def read_checkpoint(path, mmap=False):
    """The checkpoint saved at `path`, or a TrainingError naming the file."""
    try:
        with warnings.catch_warnings():  # torch warns about a plain pickle's protocol: the error says more
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # zip, pickle and version errors all mean "not a checkpoint we can use"
        raise TrainingError(f"{path}: not a readable checkpoint ({type(e).__name__}: truncated or not "
                            f"a train.py checkpoint); delete it, or pick another --out") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if not missing and isinstance(ckpt["run_options"], dict):  # a run from before the unseen-people
        ckpt["run_options"].setdefault("unseen", True)          # split trained on everyone
        ckpt["run_options"].setdefault("photo_augment", 0.0)    # or before --photo-augment
    if missing or not set(RUN_OPTIONS) <= set(ckpt["run_options"]):
        raise TrainingError(f"{path}: not a checkpoint of this train.py (no "
                            f"{', '.join(missing) or 'options'}); delete it, or pick another --out")
    return ckpt


def load_checkpoint(args):
    """With --resume, the checkpoint to continue; without, None once any file at <out>.ckpt holds
    a finished run: a new run overwrites it after its first epoch, as it does its model."""
    if args.resume and not os.path.isfile(args.checkpoint):
        raise TrainingError(f"--resume: no checkpoint at {args.checkpoint}; give the --out of the "
                            f"run to continue, or start a new run without --resume")
    if args.resume or not os.path.exists(args.checkpoint):
        return read_checkpoint(args.checkpoint) if args.resume else None
    try:
        ckpt = read_checkpoint(args.checkpoint, mmap=True)  # mmap: only what is read here leaves the disk
    except TrainingError:
        raise TrainingError(f"{args.checkpoint} exists and is not a train.py checkpoint; delete it or "
                            f"pick another --out") from None
    if not ckpt["finished"]:
        raise TrainingError(f"{args.checkpoint} holds an unfinished run (epoch {ckpt['epoch']} of "
                            f"{ckpt['run_options']['epochs']}): continue it with --resume, or delete it "
                            f"or pick another --out to start a new run")
    return None


def checkpoint_model(ckpt, path):
    """The network saved in a checkpoint, like train.initial_model's (train.end_epoch saves finite
    weights only)."""
    try:
        model = models.build_model(ckpt["arch"], ckpt["input_size"], **ckpt["model_options"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError, TypeError) as e:
        raise TrainingError(f"{path}: its weights do not fit its network ({models.one_line(e)}); "
                            f"delete it, or pick another --out") from None
    return model.train().to(memory_format=torch.channels_last)


def restore_progress(run, ckpt):
    """Continue where the checkpoint stopped: optimizer, epoch, step, history, random generators."""
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainingError(f"{run.args.checkpoint}: its optimizer state does not fit its network "
                            f"({models.one_line(e)}); delete it, or pick another --out") from None
    run.epoch = run.saved_epoch = ckpt["epoch"]
    run.step, run.history = ckpt["step"], ckpt["history"]
    set_rng_state(ckpt["rng"][0], run.device)  # a list: older train.py had one per process
    print(f"resumed from {run.args.checkpoint}: epoch {run.epoch}, step {run.step}")

