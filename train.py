"""Train the facial keypoint CNN on the course data.

    python train.py                                  # the default run: a few minutes on a laptop CPU
    python train.py --epochs 200 --out saved_models/long.pt
    python train.py --resume                         # continue an interrupted run
    python train.py --init facial_keypoints/saved_models/keypoints_model.pt --lr 1e-3   # fine-tune
    torchrun --nproc_per_node 2 train.py             # the same script, several processes (DDP)

Every default below can be overridden on the command line (`--batch-size 128`). Each image is
decoded once into memory; each sample is then one affine warp of a jittered detector-like box
(see data_load.FaceCropAugment). Per epoch: training loss and validation NME on held-out people.
A checkpoint is written atomically after every epoch; the final model goes to --out with its
metadata and a PNG of the curves.

Nothing good is replaced by something bad. Options, output folders and the checkpoint are checked
before the data is loaded; a non-finite loss, weight or validation NME stops the run before it is
saved; a new run refuses to overwrite the checkpoint of an unfinished one. Ctrl-C stops with the
command that resumes the run. Every such problem is one line on stderr, never a traceback.

A resumed run (--resume) is the run it continues: the options that define it (RUN_OPTIONS) and
the random number generators come from the checkpoint, so with --workers 0 an interrupted and
resumed run ends with the same weights as one that was never interrupted. Giving one of those
options a different value on the resume command line is an error, except --epochs and
--max-steps: a finished run can be lengthened (the learning-rate schedule then follows the new
length from where the run stands).
"""

import argparse
import datetime
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from data_load import PHOTO_GROUPS, CachedFaceDataset, photo_options
from facial_keypoints.face_crop import CROP_MARGIN, CROP_SHIFT
from facial_keypoints.media import (
    DataError,
    OneLineParser,
    check_writable,
    data_dir,
    identity_of,
    read_keypoints_csv,
    unseen_people,
)
from metrics import nme_per_face
from models import (
    ARCHITECTURES,
    HEADS,
    ModelFileError,
    all_finite,
    atomic_save,
    build_model,
    heatmap_targets,
    load_model,
    one_line,
    save_model,
    split_heatmaps,
)

DEFAULTS = dict(
    arch="net",            # models.ARCHITECTURES
    input_size=112,        # crop side in pixels
    dropout=None,          # override the model's dropout (Net: 0.0)
    widths=None,           # Net's five conv widths, e.g. "32,64,96,192,384" (default: models.Net's)
    hidden=None,           # Net's hidden fully-connected width (default: models.Net's)
    head=None,             # Net's output head: integral | regression | heatmap (default: NET_HEAD)
    init=None,             # start from this saved model (fine-tuning): its weights, arch, input size, options
    epochs=50,             # the default run: under 15 minutes on a 2-core CPU (README, Training)
    batch_size=64,         # global batch, split over processes under torchrun
    loss="wing",           # wing | mse | l1 for the regression head; pip (its own) for the heatmap head
    lr=3e-3,
    weight_decay=1e-4,
    warmup_epochs=1,
    val_fraction=0.1,      # share of training *people* held out for validation
    unseen=False,          # also train on the people of the unseen-people split (splits/unseen_people.txt)
    people=1.0,            # share of the training people to train on, the rest left out: a learning curve
                           # (how new faces' NME depends on how many people; README, Limits)
    seed=1337,
    augment=True,
    rotation=20.0,         # training rotations: normal with std rotation/2, clipped at +-rotation degrees
    photo_augment=0.0,     # real-photo degradations (blur, noise, JPEG...), 0-1: each one's probability is
                           # this times its weight in data_load.PHOTO_WEIGHTS; 0 = none
    photo_groups="all",    # which of them: all, or some of lowres,blur,lighting,noise,jpeg,occlusion
    limit=0,               # use only the first N training images (0 = all): quick runs and tests
    max_steps=0,           # stop after N optimisation steps (0 = no limit): tests
    threads=0,             # torch CPU threads per process (0 = PyTorch's default)
    workers=0,             # DataLoader worker processes preparing crops (0 = in the training process)
    device="auto",         # auto (CUDA when available, else CPU) | cpu | cuda
    data=None,             # dataset folder (default: $FKP_DATA, else ./data)
    out="saved_models/trained_model.pt",  # the tool's shipped model: facial_keypoints/saved_models/
    checkpoint=None,       # default: <out>.ckpt
    resume=False,
    progress=True,
)
LOSSES = ("wing", "mse", "l1", "pip")
# The head train.py gives Net unless --head says otherwise: integral regression beat the course's
# fully-connected head (models.Net's own default, which older model files have) on held-out people
# at the same training budget (README, Training). --hidden and --dropout belong to that older head.
NET_HEAD = "integral"
# The options that define a run: a resumed run takes them from its checkpoint. The others say how
# to run it (where the data and files are, threads, device) and come from the command line.
RUN_OPTIONS = ("arch", "input_size", "dropout", "widths", "hidden", "head", "init", "epochs", "batch_size",
               "loss", "lr", "weight_decay", "warmup_epochs", "val_fraction", "unseen", "people", "seed",
               "augment", "rotation", "photo_augment", "photo_groups", "limit", "max_steps")
# Of those, the ones a resume may change: how long the run goes on.
LENGTH_OPTIONS = ("epochs", "max_steps")


class TrainingError(Exception):
    """A run that cannot start or go on (an output that cannot be written, a checkpoint that does
    not fit, a diverged loss): reported as one line, like media.DataError."""


class Interrupted(Exception):
    """Ctrl-C during a run; the message says how far it got and how to resume it."""


# ---------------------------------------------------------------------------------------------
# The command line.

def checked(kind, test, wanted):
    """An argparse type: the option's text converted with `kind`, refused unless test(value)."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not test(value):  # NaN fails every comparison, so it is refused too
            raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
        return value
    return convert


def widths_list(text):
    """--widths: five positive whole numbers separated by commas."""
    try:
        widths = [int(w) for w in text.split(",")]
    except ValueError:
        widths = []
    if len(widths) != 5 or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not five whole numbers of 1 or more, "
                                         f"e.g. 16,32,48,96,192")
    return widths


def photo_groups_list(text):
    """--photo-groups: `all`, or names from data_load.PHOTO_GROUPS separated by commas."""
    names = list(PHOTO_GROUPS) if text == "all" else text.split(",")
    if not set(names) <= set(PHOTO_GROUPS):
        raise argparse.ArgumentTypeError(f"{text!r} is not all or a comma list of {','.join(PHOTO_GROUPS)}")
    return [name for name in PHOTO_GROUPS if name in names]  # one order: equal lists for equal runs


COUNT = checked(int, lambda v: v >= 0, "a whole number, 0 or more")
POSITIVE_INT = checked(int, lambda v: v >= 1, "a whole number, 1 or more")
POSITIVE = checked(float, lambda v: 0 < v < math.inf, "a finite number above 0")
NON_NEGATIVE = checked(float, lambda v: 0 <= v < math.inf, "a finite number, 0 or more")
FRACTION = checked(float, lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1")
SEED = checked(int, lambda v: 0 <= v < 2**31, "a whole number from 0 to 2**31 - 1")
PROBABILITY = checked(float, lambda v: 0 <= v <= 1, "a number from 0 to 1")
SHARE = checked(float, lambda v: 0 < v <= 1, "a share above 0, up to 1")
OPTION_TYPES = dict(input_size=POSITIVE_INT, dropout=FRACTION, widths=widths_list, hidden=POSITIVE_INT,
                    epochs=POSITIVE_INT, batch_size=POSITIVE_INT, lr=POSITIVE, weight_decay=NON_NEGATIVE,
                    warmup_epochs=COUNT, val_fraction=FRACTION, people=SHARE, seed=SEED,
                    rotation=NON_NEGATIVE, photo_augment=PROBABILITY, photo_groups=photo_groups_list,
                    limit=COUNT, max_steps=COUNT, threads=COUNT, workers=COUNT)
CHOICES = dict(arch=list(ARCHITECTURES), head=HEADS, loss=LOSSES, device=("auto", "cpu", "cuda"))


def make_parser(defaults=True):
    """The command line; defaults=False leaves out every option not given (to see which were)."""
    parser = OneLineParser(prog="train.py", description=__doc__.split("\n\n")[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        shown = default if defaults else argparse.SUPPRESS
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=shown,
                                help="default: %(default)s")
        else:
            parser.add_argument(flag, type=OPTION_TYPES.get(name, str), choices=CHOICES.get(name),
                                default=shown, help="default: %(default)s")
    return parser


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    # Which options the command line gave: a resumed run takes the others from its checkpoint.
    args.given = sorted(vars(make_parser(defaults=False).parse_args(argv)))
    # The command line this run stands for, recorded in the model's metadata (also when a
    # notebook calls train.main([...]) instead of the shell running train.py).
    args.command = " ".join(["python train.py", *map(shlex.quote, argv)])
    args.data = args.data or data_dir()
    args.checkpoint = args.checkpoint or args.out + ".ckpt"
    return args


def as_option(name, value):
    """An option as it is typed: `--lr 0.001`, `--no-augment`, `--widths 8,8,16,16,32`."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}"


# ---------------------------------------------------------------------------------------------
# Loss, data, schedule, processes.

def wing_loss(pred, target, w=10.0, eps=2.0, scale=56.0):
    """Wing loss (Feng et al., CVPR 2018) on errors in crop pixels: log-shaped for small errors, so
    the last pixel of accuracy still pulls, linear for large ones, so outliers do not dominate."""
    x = (pred - target).abs() * scale
    c = w - w * math.log(1 + w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


def pip_loss(maps, target, input_size, score_weight=10.0):
    """The heatmap head's loss, as in Pixel-in-Pixel Net (Jin et al., 2021): each keypoint's grid
    of scores against a map that is 1 in the keypoint's cell and 0 elsewhere (mean squared error,
    weighted 10 as there), plus the L1 error of the x and y offsets predicted in that cell."""
    scores, dx, dy = split_heatmaps(maps)
    cell, true_dx, true_dy = heatmap_targets(target, input_size, grid=maps.shape[-1])
    one_hot = torch.zeros_like(scores).scatter_(2, cell[..., None], 1.0)
    in_cell = cell[..., None]
    offset_error = ((dx.gather(2, in_cell)[..., 0] - true_dx).abs().mean()
                    + (dy.gather(2, in_cell)[..., 0] - true_dy).abs().mean())
    return score_weight * torch.nn.functional.mse_loss(scores, one_hot) + offset_error


def keypoint_loss(name, output, target, input_size):
    """The training loss by name. `output` is the network's in training mode: 136 numbers per face
    for wing, mse and l1 (which compare normalised coordinates), a heatmap head's maps for pip;
    `target` the (N, 68, 2) normalised keypoints."""
    if name == "pip":
        return pip_loss(output, target, input_size)
    pred = output.view(-1, 68, 2)
    if name == "wing":
        return wing_loss(pred, target, scale=input_size / 2)
    if name == "mse":
        return torch.nn.functional.mse_loss(pred, target)
    if name == "l1":
        return torch.nn.functional.l1_loss(pred, target)
    raise ValueError(f"unknown loss {name!r}; choose {', '.join(LOSSES)}")


class KeypointLoss(torch.nn.Module):
    """keypoint_loss as a course-style criterion, `loss = criterion(output, targets)` (Notebook 2)."""

    def __init__(self, name, input_size):
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose {', '.join(LOSSES)}")
        self.name, self.input_size = name, input_size

    def forward(self, output, target):
        return keypoint_loss(self.name, output, target, self.input_size)

    def extra_repr(self):
        return f"{self.name!r}, input_size={self.input_size}"


def split_by_person(csv_file, val_fraction, seed, limit=0, exclude=(), people_share=1.0):
    """Train/validation row indices, holding out whole people so validation is on unseen faces;
    the people in `exclude` (the unseen-people split) are in neither. people_share < 1 trains on
    that share of the remaining people only; the validation people stay the same, and for one seed
    a smaller share's people are among a larger one's, so the runs of a learning curve compare."""
    names = list(read_keypoints_csv(csv_file).iloc[:, 0])
    if limit:
        names = names[:limit]
    people = sorted({identity_of(n) for n in names} - set(exclude))
    rng = np.random.default_rng(seed)
    held_out = set(rng.choice(people, size=int(round(len(people) * val_fraction)), replace=False))
    left_out = held_out | set(exclude)
    if people_share < 1:  # drawn after validation's, so the default split is unchanged
        train_people = rng.permutation(sorted(set(people) - held_out))
        left_out |= set(train_people[max(1, round(len(train_people) * people_share)):])
    train = [i for i, n in enumerate(names) if identity_of(n) not in left_out]
    val = [i for i, n in enumerate(names) if identity_of(n) in held_out]
    return train, val


def split_rows(args):
    """The run's (training, validation) rows of the training CSV: --limit, --val-fraction, --people
    and the unseen people (left out unless --unseen) applied. Notebook 2 builds its datasets from them."""
    csv_file = os.path.join(args.data, "training_frames_keypoints.csv")
    exclude = () if args.unseen else unseen_people()
    return split_by_person(csv_file, args.val_fraction, args.seed, args.limit, exclude, args.people)


def build_datasets(args, progress=False):
    csv_file = os.path.join(args.data, "training_frames_keypoints.csv")
    images = os.path.join(args.data, "training")
    train_idx, val_idx = split_rows(args)
    train_set = CachedFaceDataset(csv_file, images, args.input_size, train=args.augment,
                                  indices=train_idx, progress=progress, rotation=args.rotation,
                                  **photo_options(args.photo_augment, args.photo_groups))
    val_set = CachedFaceDataset(csv_file, images, args.input_size, train=False, indices=val_idx,
                                progress=progress) if val_idx else None
    return train_set, val_set


def as_pair(batch):
    """(images, keypoints) of a DataLoader batch: train.py's datasets give pairs, the course's
    FacialKeypointsDataset gives dicts."""
    return (batch["image"], batch["keypoints"]) if isinstance(batch, dict) else batch


@torch.no_grad()
def validation_nme(model, val_set, batch_size=256, device="cpu"):
    """Mean NME (%) on the validation crops (NME is scale-free, so crop coordinates do)."""
    model.eval()
    errors = []
    for batch in DataLoader(val_set, batch_size=batch_size):
        images, targets = as_pair(batch)
        pred = model(images.to(device)).view(-1, 68, 2).cpu()
        errors.append(nme_per_face(pred.numpy(), targets.numpy()))
    model.train()
    return 100 * float(np.concatenate(errors).mean())


def lr_at(step, total_steps, warmup_steps, base_lr):
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def schedule(epochs, steps_per_epoch, max_steps=0, warmup_epochs=1):
    """(total_steps, warmup_steps) of a run: `epochs` of steps_per_epoch, cut at max_steps (0: no
    cut), the first warmup_epochs of them warming up (lr_at). Notebook 2's train_net uses it too."""
    total_steps = epochs * steps_per_epoch
    if max_steps:
        total_steps = min(total_steps, max_steps)
    return total_steps, warmup_epochs * steps_per_epoch


def pick_device(name):
    """'auto' is CUDA when PyTorch sees a GPU, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise DataError("--device cuda: PyTorch sees no CUDA GPU here")
    return name


def setup_distributed(device_name="cpu"):
    """(rank, world_size, device): torchrun sets WORLD_SIZE; gloo on CPU, nccl on GPU.

    Only rank 0 validates and saves; meanwhile the other ranks wait in the next step's collective
    (DDP's buffer broadcast). That takes seconds here; the timeout, 30 minutes for both backends
    (NCCL's default is 10), is how long a rank may wait before the run is declared dead.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if world_size == 1:
        return 0, 1, torch.device(device_name)
    use_cuda = device_name == "cuda"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    return dist.get_rank(), world_size, device


def mean_over_ranks(value, world_size, device):
    """The mean of a number over all processes (each process's own value when alone)."""
    if world_size == 1:
        return float(value)
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / world_size


# ---------------------------------------------------------------------------------------------
# Random number generators: seeded at the start, saved in each checkpoint, restored on resume.

def seed_all(seed):
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_state(device):
    """This process's generators: torch (flips, colour, DataLoader seeds), NumPy (crop boxes,
    rotations), Python's, and the GPU's when training on one."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return dict(torch=torch.get_rng_state(), numpy=(name, keys.tolist(), position, has_gauss, gauss),
                python=random.getstate(),
                cuda=torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    random.setstate(state["python"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def gather_rng_states(world_size, device):
    """Every process's generator state, by rank (every process takes part)."""
    if world_size == 1:
        return [rng_state(device)]
    states = [None] * world_size
    dist.all_gather_object(states, rng_state(device))
    return states


# ---------------------------------------------------------------------------------------------
# Files: output paths, checkpoints, curves.

CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "step", "history", "finished", "run_options", "arch",
                   "input_size", "model_options", "command_history", "rng")


def read_checkpoint(path, mmap=False):
    """The checkpoint saved at `path`, or a TrainingError naming the file."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # zip, pickle and version errors all mean "not a checkpoint we can use"
        raise TrainingError(f"{path}: not a readable checkpoint ({type(e).__name__}: truncated or not "
                            f"a train.py checkpoint); delete it, or pick another --checkpoint") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if not missing and isinstance(ckpt["run_options"], dict):  # a run from before the unseen-people
        ckpt["run_options"].setdefault("unseen", True)          # split trained on everyone
        ckpt["run_options"].setdefault("photo_augment", 0.0)    # or before --photo-augment
        ckpt["run_options"].setdefault("photo_groups", list(PHOTO_GROUPS))
        ckpt["run_options"].setdefault("head", None)             # or before --head (set on resume)
        ckpt["run_options"].setdefault("people", 1.0)            # or before --people
    if missing or not set(RUN_OPTIONS) <= set(ckpt["run_options"]):
        raise TrainingError(f"{path}: not a checkpoint of this train.py (no "
                            f"{', '.join(missing) or 'options'}); delete it, or pick another --checkpoint")
    return ckpt


def check_new_run(path):
    """A new run overwrites its checkpoint after the first epoch: refuse when that file holds an
    unfinished run (or anything but a checkpoint). A finished run's checkpoint is replaced, like
    its model in --out."""
    try:
        ckpt = read_checkpoint(path, mmap=True)  # mmap: only the few entries read here leave the disk
    except TrainingError:
        raise TrainingError(f"--checkpoint {path} exists and is not a train.py checkpoint; delete it "
                            f"or pick another --checkpoint (or --out)") from None
    if not ckpt["finished"]:
        raise TrainingError(f"{path} holds an unfinished run (epoch {ckpt['epoch']} of "
                            f"{ckpt['run_options']['epochs']}): continue it with --resume, or delete it "
                            f"or pick another --checkpoint (or --out) to start a new run")


def load_checkpoint(args, rank, world_size):
    """With --resume, the checkpoint to continue; without, None (once check_new_run agrees).
    Rank 0 reads it and sends it to the other ranks: only rank 0 writes checkpoints, so on several
    machines only its machine has the file."""
    ckpt = None
    if rank == 0 and args.resume:
        if not os.path.isfile(args.checkpoint):
            raise TrainingError(f"--resume: no checkpoint at {args.checkpoint}; give the --out (or "
                                f"--checkpoint) of the run to continue, or start a new run without --resume")
        ckpt = read_checkpoint(args.checkpoint)
    elif rank == 0 and os.path.exists(args.checkpoint):
        check_new_run(args.checkpoint)
    if world_size > 1 and args.resume:
        box = [ckpt]
        dist.broadcast_object_list(box, src=0)
        ckpt = box[0]
    return ckpt


def resume_options(args, ckpt, rank=0):
    """Make `args` the run that `ckpt` continues: its RUN_OPTIONS, unless the command line gives
    another length (LENGTH_OPTIONS); any other option that differs is an error."""
    saved = ckpt["run_options"]
    for name in RUN_OPTIONS:
        value = getattr(args, name)
        if name not in args.given or value == saved[name]:
            setattr(args, name, saved[name])
        elif name in LENGTH_OPTIONS:
            if rank == 0:
                print(f"note: {as_option(name, value)} instead of the checkpoint's {saved[name]}: the "
                      f"learning-rate schedule follows the new length from here on")
        else:
            raise TrainingError(f"{as_option(name, value)}: {args.checkpoint} continues a run with "
                                f"{as_option(name, saved[name])}, and a resumed run keeps its options; "
                                f"leave the option out, or start a new run with another --out")


def plot_curves(history, path):
    # A bare Figure, not pyplot: no GUI backend needed, and a notebook's inline plots keep working.
    from matplotlib.figure import Figure
    validated = not all(math.isnan(h["val_nme"]) for h in history)  # --val-fraction 0: loss only
    fig = Figure(figsize=(10 if validated else 5, 3.5))
    axes = fig.subplots(1, 2 if validated else 1, squeeze=False)[0]
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["loss"] for h in history])
    axes[0].set(xlabel="epoch", ylabel="training loss", title="Training loss", yscale="log")
    if validated:
        axes[1].plot(epochs, [h["val_nme"] for h in history])
        axes[1].set(xlabel="epoch", ylabel="NME (%)", title="Validation NME (held-out people)", yscale="log")
        axes[1].grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=100)
    os.replace(path + ".tmp.png", path)


# ---------------------------------------------------------------------------------------------
# The model: fresh, from --init, or from a checkpoint.

def earlier_commands(init_meta):
    """The commands that made a --init model's weights, oldest first (none for a fresh model)."""
    return init_meta.get("command_history") or [c for c in [init_meta.get("command")] if c]


def initial_model(args):
    """(model in training mode and channels_last, its options, the --init model's metadata or {}).
    With --init the saved model's architecture wins over --arch, --input-size and friends."""
    if args.init:
        model, init_meta = load_model(args.init)
        args.arch, args.input_size = init_meta["arch"], init_meta["input_size"]
        model_options = init_meta.get("model_options", {})
        if args.head and args.head != getattr(model, "head_type", None):
            raise TrainingError(f"--head {args.head}: {args.init} has the "
                                f"{getattr(model, 'head_type', args.arch)} head, which --init keeps")
    else:
        if args.head and args.arch != "net":
            raise TrainingError(f"--head {args.head}: only --arch net has a choice of heads")
        head = args.head or (NET_HEAD if args.arch == "net" else None)
        if head not in (None, "regression") and (args.hidden is not None or args.dropout is not None):
            raise TrainingError(f"--hidden and --dropout size the fully-connected layers of the regression "
                                f"head; the {head} head has none (add --head regression)")
        model_options = {"dropout": args.dropout, "hidden": args.hidden, "widths": args.widths, "head": head}
        model_options = {name: value for name, value in model_options.items() if value is not None}
        try:
            model, init_meta = build_model(args.arch, args.input_size, **model_options), {}
        except ValueError as e:
            raise TrainingError(f"--arch {args.arch} --input-size {args.input_size}: {e}; "
                                f"pick a larger --input-size or other options") from None
    # channels_last: the same weights, faster convolutions on a CPU.
    return model.train().to(memory_format=torch.channels_last), model_options, init_meta


def checkpoint_model(ckpt, path):
    """The network saved in a checkpoint, like initial_model's (without the --init metadata)."""
    try:
        model = build_model(ckpt["arch"], ckpt["input_size"], **ckpt["model_options"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError, TypeError) as e:
        raise TrainingError(f"{path}: its weights do not fit its network ({one_line(e)}); delete it, "
                            f"or pick another --checkpoint") from None
    if not all_finite(model):
        raise TrainingError(f"{path}: has non-finite weights; delete it and train again (lower --lr)")
    return model.train().to(memory_format=torch.channels_last), ckpt["model_options"]


# ---------------------------------------------------------------------------------------------
# The run, step by step: start (or resume), epochs, finish.

@dataclass
class Run:
    """One training run as it goes from epoch to epoch."""
    args: argparse.Namespace
    rank: int
    world_size: int
    device: torch.device
    model: torch.nn.Module         # the network that rank 0 validates and saves
    ddp_model: torch.nn.Module     # the same network, wrapped for DDP under torchrun
    optimizer: torch.optim.Optimizer
    criterion: torch.nn.Module     # KeypointLoss(args.loss, args.input_size)
    sampler: DistributedSampler
    loader: DataLoader
    val_set: object                # None with --val-fraction 0
    total_steps: int
    warmup_steps: int
    run_options: dict              # what the checkpoint records for a resume
    model_options: dict
    command_history: list
    started: float                 # time.time() when the data started loading
    epoch: int = 0                 # epochs done
    step: int = 0                  # optimisation steps done
    history: list = field(default_factory=list)
    saved_epoch: int = None        # the epoch the checkpoint on disk holds (None: no checkpoint yet)

    @property
    def master(self):
        return self.rank == 0

    def done(self):
        return self.epoch >= self.args.epochs or self.step >= self.total_steps


def starting_model(args, ckpt):
    """(model, its options, the commands that made it so far, this one last): the checkpoint's
    network when resuming, else initial_model's."""
    if not ckpt:
        model, model_options, init_meta = initial_model(args)
        return model, model_options, [*earlier_commands(init_meta), args.command]
    model, model_options = checkpoint_model(ckpt, args.checkpoint)
    args.arch, args.input_size = ckpt["arch"], ckpt["input_size"]  # an --init model's, say
    return model, model_options, [*ckpt["command_history"], args.command]


def loss_for_head(args, head):
    """--loss for the network's head: the heatmap head trains with pip, the regression head with
    the others; a head left to its default gets its own loss (wing, or pip)."""
    if (head == "heatmap") == (args.loss == "pip"):
        return args.loss
    if "loss" in args.given:
        raise TrainingError(f"--loss {args.loss} does not fit the {head} head; use "
                            f"{'--loss pip' if head == 'heatmap' else 'wing, mse or l1'}")
    return "pip" if head == "heatmap" else "wing"


def epoch_sampler(dataset, seed, rank=0, world_size=1):
    """The run's shuffle: this process's share of a permutation drawn from `seed` and the epoch
    (call set_epoch before each), independent of the global generators that augmentation uses."""
    return DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                              drop_last=True)


def training_loader(args, train_set, rank, world_size):
    """(sampler, loader): this process's share of each epoch's shuffled batches."""
    sampler = epoch_sampler(train_set, args.seed, rank, world_size)
    loader = DataLoader(train_set, batch_size=args.batch_size // world_size, sampler=sampler, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    if len(loader) == 0:
        raise DataError(f"too few training images ({len(train_set)}) for --batch-size {args.batch_size}; "
                        f"lower --batch-size (or --val-fraction)")
    return sampler, loader


def start_run(args, rank, world_size, device):
    """Everything before the first epoch: the checks, the model (fresh, --init or the checkpoint's),
    the data, the optimizer and, when resuming, where the run stopped."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % world_size:
        raise TrainingError(f"--batch-size {args.batch_size} must divide by the {world_size} processes")
    if rank == 0:
        check_writable("--out", args.out)
        check_writable("--checkpoint", args.checkpoint)
    ckpt = load_checkpoint(args, rank, world_size)
    if ckpt:
        resume_options(args, ckpt, rank)
    run_options = {name: getattr(args, name) for name in RUN_OPTIONS}
    # Augmentation draws (NumPy: crop, rotation; torch: flip, colour) differ per process. The
    # weights start equal anyway: DDP copies rank 0's (seeded as a single process) to every rank.
    seed_all(args.seed + rank)
    model, model_options, commands = starting_model(args, ckpt)
    model = model.to(device)
    # The head and loss the run has in fact (a default or --init head, a loss that follows it).
    run_options["head"] = args.head = getattr(model, "head_type", None)  # NaimishNet: one head
    run_options["loss"] = args.loss = loss_for_head(args, args.head or "regression")

    started = time.time()
    train_set, val_set = build_datasets(args, progress=args.progress and rank == 0)
    sampler, loader = training_loader(args, train_set, rank, world_size)
    total_steps, warmup_steps = schedule(args.epochs, len(loader), args.max_steps, args.warmup_epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    run = Run(args=args, rank=rank, world_size=world_size, device=device, model=model, ddp_model=ddp_model,
              optimizer=optimizer, criterion=KeypointLoss(args.loss, args.input_size), sampler=sampler,
              loader=loader, val_set=val_set, total_steps=total_steps, warmup_steps=warmup_steps,
              run_options=run_options, model_options=model_options, command_history=commands,
              started=started)
    if ckpt:
        restore_progress(run, ckpt)
    if run.master:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{args.arch}: {n_params / 1e6:.2f}M parameters, {len(train_set)} training / "
              f"{len(val_set) if val_set else 0} validation faces, {world_size} process(es) on {device}, "
              f"{len(loader)} steps per epoch (data ready in {time.time() - started:.0f}s)")
    return run


def restore_progress(run, ckpt):
    """Continue where the checkpoint stopped: optimizer, epoch, step, history, random generators."""
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainingError(f"{run.args.checkpoint}: its optimizer state does not fit its network "
                            f"({one_line(e)}); delete it, or pick another --checkpoint") from None
    run.epoch, run.step, run.history = ckpt["epoch"], ckpt["step"], ckpt["history"]
    run.saved_epoch = ckpt["epoch"]
    if len(ckpt["rng"]) == run.world_size:
        set_rng_state(ckpt["rng"][run.rank], run.device)
    else:  # another number of processes: fresh draws, distinct for every (epoch, rank)
        seed_all(run.args.seed + run.rank + run.world_size * run.epoch)
        if run.master:
            print(f"note: the checkpoint was written by {len(ckpt['rng'])} process(es), this run has "
                  f"{run.world_size}: augmentation continues from fresh random draws")
    if run.master:
        print(f"resumed from {run.args.checkpoint}: epoch {run.epoch}, step {run.step}")


def train_step(model, optimizer, images, targets, criterion, device="cpu"):
    """One optimisation step on a batch (images channels_last, like the model); returns the loss.
    `criterion(output, targets)` is the loss: a KeypointLoss (train.py's and Notebook 2's)."""
    output = model(images.to(device, memory_format=torch.channels_last))
    loss = criterion(output, targets.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def what_is_kept(run):
    if run.saved_epoch is None:
        return "nothing was saved"
    return f"{run.args.checkpoint} keeps epoch {run.saved_epoch}"


def train_epoch(run):
    """One pass over this process's share of the training set; returns (the epoch's mean loss over
    all processes, the last learning rate). Stops the run at the first non-finite loss."""
    args = run.args
    run.sampler.set_epoch(run.epoch)
    losses = []
    with tqdm(run.loader, desc=f"epoch {run.epoch + 1}/{args.epochs}", leave=False,
              disable=not (args.progress and run.master)) as bar:
        for images, targets in bar:
            lr = lr_at(run.step, run.total_steps, run.warmup_steps, args.lr)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(run.ddp_model, run.optimizer, images, targets, run.criterion, run.device)
            if not math.isfinite(loss):
                raise TrainingError(f"the training loss is {loss} at step {run.step + 1} (epoch "
                                    f"{run.epoch + 1}): the run diverged; lower --lr (now {args.lr:g}); "
                                    f"{what_is_kept(run)}")
            losses.append(loss)
            run.step += 1
            bar.set_postfix(loss=f"{loss:.3f}")
            if run.step >= run.total_steps:
                break
    run.epoch += 1
    return mean_over_ranks(np.mean(losses), run.world_size, run.device), lr  # every rank takes part


def end_epoch(run, loss, lr, started):
    """Rank 0 validates, records the epoch and writes the checkpoint, unless the weights or the
    validation NME are not finite numbers: a diverged state never replaces a good checkpoint."""
    validated = run.master and run.val_set is not None
    val_nme = validation_nme(run.model, run.val_set, device=run.device) if validated else float("nan")
    rng_states = gather_rng_states(run.world_size, run.device)  # after validation: it draws too
    if not run.master:
        return
    if not all_finite(run.model) or (validated and not math.isfinite(val_nme)):
        raise TrainingError(f"epoch {run.epoch}: the weights or the validation NME are not finite numbers: "
                            f"the run diverged; lower --lr (now {run.args.lr:g}); {what_is_kept(run)}")
    run.history.append(dict(epoch=run.epoch, step=run.step, loss=loss, val_nme=val_nme, lr=lr,
                            seconds=time.time() - started))
    atomic_save(dict(model=run.model.state_dict(), optimizer=run.optimizer.state_dict(), epoch=run.epoch,
                     step=run.step, history=run.history, finished=run.done(), run_options=run.run_options,
                     arch=run.args.arch, input_size=run.args.input_size, model_options=run.model_options,
                     command_history=run.command_history, rng=rng_states),
                run.args.checkpoint)
    run.saved_epoch = run.epoch
    val_text = f"val NME {val_nme:.2f}%" if validated else "no validation"
    print(f"epoch {run.epoch:3d}/{run.args.epochs}  loss {loss:.4f}  {val_text}  lr {lr:.2e}  "
          f"{run.history[-1]['seconds']:.1f}s", flush=True)  # printed once the checkpoint holds it


def model_meta(args, model_options, steps, val_nme, train_seconds, command_history, world_size=1,
               device="cpu"):
    """What a saved model carries besides its weights (models.save_model): the network, the crop
    it was trained on, how it was trained. Notebook 2 saves its model with it too."""
    return dict(arch=args.arch, input_size=args.input_size, model_options=model_options,
                crop_margin=CROP_MARGIN,
                crop_shift=CROP_SHIFT, grayscale=True, pixel_scale="gray / 255",
                keypoint_norm="(p - (input_size - 1) / 2) / ((input_size - 1) / 2), crop pixels",
                epochs=args.epochs, steps=steps, train_seconds=round(train_seconds, 1),
                val_nme=val_nme, command=args.command, command_history=command_history,
                world_size=world_size, device=str(device), torch=str(torch.__version__),
                created=time.strftime("%Y-%m-%d %H:%M:%S"))


def finish(run):
    """Rank 0 saves the final model (whose weights and validation NME end_epoch has checked) with
    its metadata, and the curves; then the processes part."""
    args = run.args
    if run.master:
        train_seconds = time.time() - run.started
        history = run.history
        val_nme = history[-1]["val_nme"] if history and run.val_set else None
        meta = model_meta(args, run.model_options, run.step, val_nme, train_seconds, run.command_history,
                          run.world_size, run.device)
        save_model(run.model.cpu(), args.out, meta)
        if history:
            plot_curves(history, os.path.splitext(args.out)[0] + "_curves.png")
        final = f"final val NME {meta['val_nme']:.2f}%" if run.val_set else "no validation set"
        print(f"saved {args.out} ({train_seconds / 60:.1f} min, {final})")
    if run.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


def resume_command(args):
    """The command that continues this run: it needs only where the checkpoint (and data) are."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    words = ["python", "train.py"] if world_size == 1 else ["torchrun", "--nproc_per_node", str(world_size),
                                                             "train.py"]
    words.append("--resume")
    for name in ("data", "out", "checkpoint"):
        if name in args.given:
            words += [f"--{name}", getattr(args, name)]
    return shlex.join(words)


def interrupted_message(args, run):
    if run is not None and run.saved_epoch is not None:
        return f"interrupted after epoch {run.saved_epoch}; resume with `{resume_command(args)}`"
    if args.resume:
        return f"interrupted before training went on; {args.checkpoint} is as it was"
    return "interrupted before the first epoch ended; nothing was saved"


def train(args):
    """Run training as configured; returns the per-epoch history (list of dicts)."""
    rank, world_size, device = setup_distributed(pick_device(args.device))
    run = None
    try:
        run = start_run(args, rank, world_size, device)
        while not run.done():
            started = time.time()
            loss, lr = train_epoch(run)
            end_epoch(run, loss, lr, started)
        finish(run)
    except KeyboardInterrupt:
        raise Interrupted(interrupted_message(args, run) if rank == 0 else "") from None
    return run.history


def main(argv=None):
    args = parse_args(argv)
    try:
        return train(args)
    except (DataError, ModelFileError, TrainingError) as e:
        sys.exit(f"train.py: {e}")
    except Interrupted as e:
        if str(e):
            print(f"train.py: {e}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
