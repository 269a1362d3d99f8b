"""Train the facial keypoint CNN on the course data.

    python train.py                                  # the default run: a few minutes on a laptop CPU
    python train.py --resume                         # continue an interrupted run
    python train.py --init saved_models/course_model.pt --lr 1e-3 --out mine.pt   # fine-tune

The shipped model (copied to facial_keypoints/saved_models/, then `python export.py`) is this
recipe's runs on a 2-core CPU: the two-head network on the course data, fkp-wild's 300-W faces and
LFW faces dlib's model labelled (pseudo_label.py; the held-out course people's stay out), then a
short fine-tune on degraded crops (--photo-augment) to read blurred faces better. In ./data-wild:

    python pseudo_label.py ../shared/lfw --out outputs/lfw-pts
    cp -r ../shared/fkp-wild data-wild
    python get_data.py --pts outputs/lfw-pts --source lfw --dest data-wild
    export FKP_WILD=data-wild
    python train.py --arch twohead-efficientnet --epochs 30 --out outputs/wild/model.pt
    python train.py --init outputs/wild/model.pt --epochs 8 --lr 5e-4 --photo-augment 1 --out outputs/photo.pt

Each sample is one affine warp of a jittered detector-like box (data_load.FaceCropAugment) on an
image decoded once. Every epoch prints the training loss and the validation NME on held-out people
and writes a checkpoint, <out>.ckpt, atomically; the final model goes to --out with its metadata
and a PNG of the curves. Nothing good is replaced by something bad: options, outputs and the
checkpoint are checked before the data is loaded; a non-finite loss, weight or validation NME stops
the run before it is saved; a new run refuses to overwrite an unfinished run's checkpoint; Ctrl-C
prints the command that resumes the run. Each such problem is one line on stderr, no traceback.
A resumed run takes the options that define it (RUN_OPTIONS) and the random generators from its
checkpoint, so it ends with the weights of a run never interrupted; only --epochs may change.

The tool's two-head network (models.TwoHeadNet; --arch twohead-net, Net's trunk, or --arch
twohead-efficientnet, EfficientNet-Lite0's from its ImageNet weights) trains on the course rows
above and on the in-the-wild set (media.wild_dir(), less the photos of its validation split,
media.wild_val_photos()) together: each sample supervises the head of its own labelling (own_heads).
It validates each head on its own set: the course head on the held-out people (val_nme), the 300-W
head on the wild validation photos (wild_val_nme).
"""

import argparse
import math
import os
import shlex
import sys
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

import models
from facial_keypoints import media
from facial_keypoints.face_crop import CROP_MARGIN, CROP_SHIFT
from facial_keypoints.outputs import SHIPPED_MODELS, holds_plot, reserve_file_output
from metrics import nme_per_face
from train_checkpoint import (
    RUN_OPTIONS,
    TrainingError,
    checkpoint_model,
    checkpoint_of,
    load_checkpoint,
    restore_progress,
    seed_all,
)
from train_data import (  # split_rows: Notebook 2 reads the run's rows as train.split_rows
    PHOTO_GROUPS_USED,
    build_datasets,
    build_wild_datasets,
    data_terms,
    existing_wild_csv,
    split_rows,  # noqa: F401
    trained_on,
    two_heads,
)

DEFAULTS = dict(
    arch="net",            # models.ARCHITECTURES; twohead-*: models.TwoHeadNet, also on the wild set
    input_size=112,        # crop side in pixels
    widths=None,           # Net's five conv widths, e.g. "32,64,96,192,384" (default: models.Net's)
    init=None,             # start from this saved model (fine-tuning): its weights, arch, input size, options
    epochs=50,             # the default run: it must finish within 15 minutes on a 2-core CPU
    batch_size=64,
    loss="wing",           # wing | mse | l1
    lr=3e-3,
    weight_decay=1e-4,
    val_fraction=0.1,      # share of training *people* held out for validation
    unseen=False,          # also train on the people of the unseen-people split (splits/unseen_people.txt)
    seed=1337,
    augment=True,
    rotation=20.0,         # training rotations: normal with std rotation/2, clipped at +-rotation degrees
    photo_augment=0.0,     # real-photo degradations (PHOTO_GROUPS_USED), 0-1: x data_load.PHOTO_WEIGHTS
    threads=0,             # torch CPU threads (0 = PyTorch's default)
    device="auto",         # auto (CUDA when available, else CPU) | cpu | cuda
    data=None,             # dataset folder (default: $FKP_DATA, else ./data)
    out="saved_models/trained_model.pt",  # and its checkpoint, <out>.ckpt
    resume=False,
)
# What tests and notebooks pass besides the options, train.main(argv, limit=8): limit (the first N
# training images only), max_steps (stop after N optimisation steps) and net_options (models.Net's
# arguments besides --widths, e.g. the course's head, {"head": "regression"}: docs/EXPERIMENTS.md).
SETTINGS = ("limit", "max_steps", "net_options")
LOSSES = ("wing", "mse", "l1")
# The head train.py gives Net (also Net's default, recorded in every model file): integral regression
# beat the course's fully-connected head at the same budget (docs/EXPERIMENTS.md, output heads).
NET_HEAD = "integral"
# The architectures whose fresh runs start from pretrained weights (models.TwoHeadNet's pretrained).
PRETRAINED_ARCHS = ("twohead-efficientnet",)
WARMUP_EPOCHS = 1  # of linear learning-rate warm-up: until batch norm's statistics settle
LENGTH_OPTIONS = ("epochs", "max_steps")  # the RUN_OPTIONS a resume may change
# Run options that older checkpoints record and this train.py dropped (commit ec9d21a has them),
# with the value every run now has: a checkpoint with another value continues a run it cannot make.
REMOVED_OPTIONS = dict(warmup_epochs=WARMUP_EPOCHS, people=1.0, photo_groups=list(PHOTO_GROUPS_USED))


# ---- The command line.

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


POSITIVE_INT = checked(int, lambda v: v >= 1, "a whole number, 1 or more")
NON_NEGATIVE = checked(float, lambda v: 0 <= v < math.inf, "a finite number, 0 or more")
OPTION_TYPES = dict(
    input_size=POSITIVE_INT, epochs=POSITIVE_INT, batch_size=POSITIVE_INT, rotation=NON_NEGATIVE,
    widths=checked(lambda text: [int(w) for w in text.split(",")], lambda v: len(v) == 5 and min(v) >= 1,
                   "five whole numbers of 1 or more, e.g. 16,32,48,96,192"),
    lr=checked(float, lambda v: 0 < v < math.inf, "a finite number above 0"), weight_decay=NON_NEGATIVE,
    val_fraction=checked(float, lambda v: 0 <= v < 1, "a fraction from 0 up to (not including) 1"),
    seed=checked(int, lambda v: 0 <= v < 2**31, "a whole number from 0 to 2**31 - 1"),
    photo_augment=checked(float, lambda v: 0 <= v <= 1, "a number from 0 to 1"),
    threads=checked(int, lambda v: v >= 0, "a whole number, 0 or more"),
)
CHOICES = dict(arch=list(models.ARCHITECTURES), loss=LOSSES, device=("auto", "cpu", "cuda"))


def make_parser(defaults=True):
    """The command line; defaults=False leaves out every option not given (to see which were)."""
    parser = media.OneLineParser(prog="train.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, default in DEFAULTS.items():
        flag, shown = "--" + name.replace("_", "-"), default if defaults else argparse.SUPPRESS
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=shown,
                                help="default: %(default)s")
        else:
            parser.add_argument(flag, type=OPTION_TYPES.get(name, str), choices=CHOICES.get(name),
                                default=shown, help="default: %(default)s")
    return parser


def parse_args(argv=None, limit=0, max_steps=0, net_options=None):
    """The run: the command line's options and the SETTINGS a test or notebook passes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    args.limit, args.max_steps, args.net_options = limit, max_steps, net_options or {}
    settings = {name: getattr(args, name) for name in SETTINGS if getattr(args, name)}
    args.given = sorted([*vars(make_parser(defaults=False).parse_args(argv)), *settings])
    # The command this run stands for, in the model's metadata (also when a notebook calls
    # train.main([...]) instead of the shell running train.py): any settings after a #.
    args.command = shlex.join(["python", "train.py", *argv])
    if settings:
        args.command += "  # " + ", ".join(f"{name}={value!r}" for name, value in settings.items())
    args.data, args.checkpoint = args.data or media.data_dir(), args.out + ".ckpt"
    return args


def as_option(name, value):
    """An option as it is typed: `--lr 0.001`, `--no-augment`, `--widths 8,8,16,16,32`."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}"


# ---- Loss, validation, schedule, device.

def wing_loss(pred, target, w=10.0, eps=2.0, scale=56.0):
    """Wing loss (Feng et al., CVPR 2018) on errors in crop pixels: log-shaped for small errors, so
    the last pixel of accuracy still pulls, linear for large ones, so outliers do not dominate."""
    x = (pred - target).abs() * scale
    c = w - w * math.log(1 + w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


class KeypointLoss(torch.nn.Module):
    """A loss of LOSSES as a course-style criterion: criterion(136 numbers a face, (N, 68, 2) keypoints)."""

    def __init__(self, name, input_size):
        super().__init__()
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose {', '.join(LOSSES)}")
        self.name, self.input_size = name, input_size

    def forward(self, output, target):
        pred = output.view(-1, 68, 2)
        if self.name == "wing":
            return wing_loss(pred, target, scale=self.input_size / 2)
        loss = torch.nn.functional.mse_loss if self.name == "mse" else torch.nn.functional.l1_loss
        return loss(pred, target)

    def extra_repr(self):
        return f"{self.name!r}, input_size={self.input_size}"


def epoch_sampler(dataset, seed):
    """The run's shuffle, drawn from `seed` and the epoch (set_epoch), not from augmentation's generators."""
    return DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)


@torch.no_grad()
def validation_nme(model, val_set, batch_size=256, device="cpu", head=None):
    """Mean NME (%) on the validation crops (NME is scale-free, so crop coordinates do); `head`:
    the two-head network's output to read (an index of models.CONVENTIONS)."""
    model.eval()
    errors = []
    for batch in DataLoader(val_set, batch_size=batch_size):
        # train.py's datasets give pairs, the course's FacialKeypointsDataset (Notebook 2) dicts
        images, targets = (batch["image"], batch["keypoints"]) if isinstance(batch, dict) else batch[:2]
        pred = model(images.to(device))
        pred = (pred if head is None else pred[:, head]).reshape(-1, 68, 2).cpu()
        errors.append(nme_per_face(pred.numpy(), targets.numpy()))
    model.train()
    return 100 * float(np.concatenate(errors).mean())


def lr_at(step, total_steps, warmup_steps, base_lr):
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def schedule(epochs, steps_per_epoch, max_steps=0):
    """(total_steps, warmup_steps): the epochs' steps cut at max_steps (0: none), WARMUP_EPOCHS warming up."""
    return min(epochs * steps_per_epoch, max_steps or math.inf), WARMUP_EPOCHS * steps_per_epoch


def pick_device(name):
    """'auto' is CUDA when PyTorch sees a GPU, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise media.DataError("--device cuda: PyTorch sees no CUDA GPU here")
    return name


# ---- Resumed options and the model: fresh, from --init, or from a checkpoint (train_checkpoint).

def check_removed_options(saved, path):
    """Refuse a checkpoint whose run needs an option this train.py dropped (REMOVED_OPTIONS) or the
    heatmap head, whose loss (pip) is gone too; the other old options it records change nothing."""
    dropped = {name: saved[name] for name, value in REMOVED_OPTIONS.items()
               if name in saved and saved[name] != value}
    if not saved["photo_augment"]:
        dropped.pop("photo_groups", None)  # groups that never apply
    if saved["loss"] not in LOSSES:
        dropped.update(head=saved.get("head"), loss=saved["loss"])
    if dropped:
        options = " ".join(as_option(name, value) for name, value in dropped.items())
        raise TrainingError(f"{path} continues a run with {options}, which this train.py no longer has "
                            f"(commit ec9d21a's does); start a new run with another --out")


def resume_options(args, ckpt):
    """Make `args` the run `ckpt` continues: its RUN_OPTIONS; another value is an error but a length."""
    saved = ckpt["run_options"]
    check_removed_options(saved, args.checkpoint)
    for name in RUN_OPTIONS:
        value = getattr(args, name)
        if name not in args.given or value == saved[name]:
            setattr(args, name, saved[name])
        elif name in LENGTH_OPTIONS:
            print(f"note: {as_option(name, value)} instead of the checkpoint's {saved[name]}: the "
                  f"learning-rate schedule follows the new length from here on")
        else:
            raise TrainingError(f"{as_option(name, value)}: {args.checkpoint} continues a run with "
                                f"{as_option(name, saved[name])}, and a resumed run keeps its options; "
                                f"leave the option out, or start a new run with another --out")


def initial_model(args):
    """(model in training mode and channels_last, its options, the --init model's metadata or {}).
    With --init the saved model's architecture wins over --arch, --input-size and --widths."""
    if args.init:
        model, init_meta = models.load_model(args.init)
        args.arch, args.input_size = init_meta["arch"], init_meta["input_size"]
        model_options = init_meta.get("model_options", {})
    else:
        chosen = {"widths": args.widths, "head": NET_HEAD if args.arch == "net" else None, **args.net_options}
        model_options = {name: value for name, value in chosen.items() if value is not None}
        # The EfficientNet trunk starts from ImageNet's weights (net_options {"pretrained": False}: not);
        # the model files do not record the choice in model_options: they hold every weight.
        pretrained = model_options.pop("pretrained", args.arch in PRETRAINED_ARCHS)
        try:
            model = models.build_model(args.arch, args.input_size, **model_options,
                                       **({"pretrained": True} if pretrained else {}))
            init_meta = {}
        except ValueError as e:
            raise TrainingError(f"--arch {args.arch} --input-size {args.input_size}: {e}; "
                                f"pick a larger --input-size or other options") from None
    # channels_last: the same weights, faster convolutions on a CPU.
    return model.train().to(memory_format=torch.channels_last), model_options, init_meta


# ---- The run, step by step: start (or resume), epochs, finish.

@dataclass
class Run:
    """One training run as it goes from epoch to epoch."""
    args: argparse.Namespace
    device: torch.device
    model: torch.nn.Module
    model_options: dict
    optimizer: torch.optim.Optimizer
    loader: DataLoader             # its sampler: epoch_sampler's
    val_set: object                # None with --val-fraction 0
    total_steps: int
    warmup_steps: int
    run_options: dict              # what the checkpoint records for a resume
    command_history: list          # the commands that made the weights, this one last
    init_saw_unseen: bool | None   # whether the --init weights saw the unseen people (None: not recorded)
    started: float                 # time.time() when the data started loading
    epoch: int = 0                 # epochs done
    step: int = 0                  # optimisation steps done
    history: list = field(default_factory=list)
    saved_epoch: int = None        # the epoch the checkpoint on disk holds (None: no checkpoint yet)
    wild_val_set: object = None    # the two-head network's: the wild validation photos' faces
    pretrained: str = None         # what the first weights of a pretrained trunk were (None: none)

    def done(self):
        return self.epoch >= self.args.epochs or self.step >= self.total_steps


def start_run(args, device):
    """Everything before the first epoch: checks, model (fresh, --init or resumed), data, optimizer."""
    if args.threads:
        torch.set_num_threads(args.threads)
    reserve_outputs(args)
    ckpt = load_checkpoint(args)
    if ckpt:
        resume_options(args, ckpt)
    run_options = {name: getattr(args, name) for name in RUN_OPTIONS}
    seed_all(args.seed)
    if ckpt:
        model, model_options = checkpoint_model(ckpt, args.checkpoint), ckpt["model_options"]
        args.arch, args.input_size = ckpt["arch"], ckpt["input_size"]  # an --init model's, say
        commands, init_saw_unseen = ckpt["command_history"], ckpt.get("init_saw_unseen", False)
        pretrained = ckpt.get("pretrained")
    else:
        model, model_options, init_meta = initial_model(args)
        commands = init_meta.get("command_history") or [c for c in [init_meta.get("command")] if c]
        init_saw_unseen = init_meta.get("trained_on_unseen_people") if args.init else False
        pretrained = init_meta.get("pretrained") if args.init else getattr(model, "pretrained_from", None)
    if two_heads(args.arch):
        existing_wild_csv()  # a missing wild set: said before the data loads
    started = time.time()
    train_set, val_set = build_datasets(args, progress=sys.stderr.isatty())
    wild_val_set = None
    if two_heads(args.arch):
        wild_train_set, wild_val_set = build_wild_datasets(args, progress=sys.stderr.isatty())
        train_set = ConcatDataset([train_set, wild_train_set])
    loader = DataLoader(train_set, batch_size=args.batch_size, sampler=epoch_sampler(train_set, args.seed),
                        drop_last=True)  # crops made here: the generators a checkpoint saves draw them all
    if len(loader) == 0:
        raise media.DataError(f"too few training images ({len(train_set)}) for --batch-size "
                              f"{args.batch_size}; lower --batch-size (or --val-fraction)")
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if not ckpt:  # crops and shuffles start from the seed, whatever came before (Notebook 2 shows samples)
        seed_all(args.seed)
    run = Run(args, device, model, model_options, optimizer, loader, val_set,
              *schedule(args.epochs, len(loader), args.max_steps), run_options, [*commands, args.command],
              init_saw_unseen, started, wild_val_set=wild_val_set, pretrained=pretrained)
    if ckpt:
        restore_progress(run, ckpt)
    wild = f" + {len(wild_val_set) if wild_val_set else 0} wild" if two_heads(args.arch) else ""
    print(f"{args.arch}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
          f"{len(train_set)} training / {len(val_set) if val_set else 0}{wild} validation faces on {device}, "
          f"{len(loader)} steps per epoch (data ready in {time.time() - started:.0f}s)")
    return run


def own_heads(output, conventions):
    """Each sample's own head of the two-head network's (N, heads, 136) output: (N, 136), row i
    from head conventions[i], so that a loss on it trains each head on its own labelling only."""
    return output[torch.arange(len(conventions), device=output.device), conventions.to(output.device)]


def train_step(model, optimizer, images, targets, criterion, device="cpu", conventions=None):
    """One optimisation step (images channels_last, like the model); returns the loss. Notebook 2's
    too. `conventions`: for the two-head network, each sample's head (own_heads)."""
    output = model(images.to(device, memory_format=torch.channels_last))
    if conventions is not None:
        output = own_heads(output, conventions)
    loss = criterion(output, targets.to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def curves_path(out):
    return os.path.splitext(out)[0] + "_curves.png"


def reserve_outputs(args):
    """Refuse, before the data is loaded, an --out that is the --init model, in the data or among
    the shipped models, an existing file that is not a model (torch.save writes zip archives), a
    folder or in a folder that cannot be written; its checkpoint (load_checkpoint checks what it
    holds) and curves alike. A media.OutputError naming --out."""
    inputs, protected = [args.data], [args.init, SHIPPED_MODELS]
    reserve_file_output("--out", args.out, zipfile.is_zipfile, "a model file", inputs, protected)
    reserve_file_output("--out", args.checkpoint, os.path.isfile, "a checkpoint", inputs, protected)
    reserve_file_output("--out", curves_path(args.out), holds_plot, "a plot", inputs, protected)


def kept(run):
    """What a run that stops now leaves on disk."""
    return f"{run.args.checkpoint} keeps epoch {run.saved_epoch}" if run.saved_epoch else "nothing was saved"


def diverged(run, what):
    return TrainingError(f"{what}: the run diverged; lower --lr (now {run.args.lr:g}); {kept(run)}")


def resume_command(args):
    data = ["--data", args.data] if "data" in args.given else []
    return shlex.join(["python", "train.py", "--resume", *data, "--out", args.out])


def saved(save, path, then):
    """save(), an atomic write of `path` (the old file stays whole if it fails); a failed write
    (full disk, read-only folder) is a TrainingError naming the file, `then` saying what is left.
    torch.save reports one as a RuntimeError with a message about its zip writer."""
    try:
        save()
    except (OSError, RuntimeError) as e:
        reason = getattr(e, "strerror", None) or "the write failed: is the disk full?"
        raise TrainingError(f"{path}: cannot write it ({reason}); {then}") from None


def train_epoch(run):
    """One pass over the training set: (mean loss, last learning rate); a non-finite loss stops it."""
    run.loader.sampler.set_epoch(run.epoch)
    criterion, losses = KeypointLoss(run.args.loss, run.args.input_size), []
    with tqdm(run.loader, desc=f"epoch {run.epoch + 1}/{run.args.epochs}", leave=False,
              disable=not sys.stderr.isatty()) as bar:
        for images, targets, *conventions in bar:  # the two-head network's samples: with their convention
            media.check_stop()  # Ctrl-C or SIGTERM: here, between steps, never inside a save
            lr = lr_at(run.step, run.total_steps, run.warmup_steps, run.args.lr)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(run.model, run.optimizer, images, targets, criterion, run.device,
                              *conventions)
            if not math.isfinite(loss):
                raise diverged(run, f"the loss is {loss} at step {run.step + 1}, epoch {run.epoch + 1}")
            losses.append(loss)
            run.step += 1
            bar.set_postfix(loss=f"{loss:.3f}")
            if run.step >= run.total_steps:
                break
    run.epoch += 1
    return float(np.mean(losses)), lr


def end_epoch(run, loss, lr, started):
    """Validate, record the epoch and write the checkpoint, unless the weights or the validation
    NME are not finite numbers: a diverged state never replaces a good checkpoint."""
    heads = two_heads(run.args.arch)
    course, wild = (models.CONVENTIONS.index(name) for name in ("course", "300w"))
    val_nme = validation_nme(run.model, run.val_set, device=run.device, head=course if heads else None) \
        if run.val_set else float("nan")
    wild_val_nme = validation_nme(run.model, run.wild_val_set, device=run.device, head=wild) \
        if run.wild_val_set else float("nan")
    if not models.all_finite(run.model) or (run.val_set and not math.isfinite(val_nme)) \
            or (run.wild_val_set and not math.isfinite(wild_val_nme)):
        raise diverged(run, f"epoch {run.epoch}: the weights or the validation NME are not finite numbers")
    run.history.append(dict(epoch=run.epoch, step=run.step, loss=loss, val_nme=val_nme, lr=lr,
                            seconds=time.time() - started))
    if heads:
        run.history[-1]["wild_val_nme"] = wild_val_nme
    checkpoint = checkpoint_of(run)
    saved(lambda: models.atomic_save(checkpoint, run.args.checkpoint), run.args.checkpoint,
          kept(run) + (f"; resume with `{resume_command(run.args)}` once it can be written"
                       if run.saved_epoch else ""))
    run.saved_epoch = run.epoch
    val_text = f"val NME {val_nme:.2f}%" if run.val_set else "no validation"
    if heads:
        val_text += f"  wild val NME {wild_val_nme:.2f}%" if run.wild_val_set else "  no wild validation"
    print(f"epoch {run.epoch:3d}/{run.args.epochs}  loss {loss:.4f}  {val_text}  lr {lr:.2e}  "
          f"{run.history[-1]['seconds']:.1f}s", flush=True)  # printed once the checkpoint holds it


def model_meta(args, model_options, steps, val_nme, train_seconds, command_history, device="cpu",
               init_saw_unseen=False, wild_val_nme=None, pretrained=None, sources=None):
    """What a saved model carries besides its weights: network, crop, training (Notebook 2's too).
    The two-head network's also says its outputs' conventions, its wild validation NME, what its
    trunk's first weights were (pretrained: None when none), the faces it trained on by source
    (trained_on) and the terms those photos come with."""
    meta = dict(arch=args.arch, input_size=args.input_size, model_options=model_options,
                crop_margin=CROP_MARGIN, crop_shift=CROP_SHIFT, grayscale=True, pixel_scale="gray / 255",
                keypoint_norm="(p - (input_size - 1) / 2) / ((input_size - 1) / 2), crop pixels",
                epochs=args.epochs, steps=steps, train_seconds=round(train_seconds, 1),
                val_nme=val_nme, command=args.command, command_history=command_history,
                trained_on_unseen_people=True if args.unseen else init_saw_unseen,
                device=str(device), torch=str(torch.__version__), created=time.strftime("%Y-%m-%d %H:%M:%S"))
    if two_heads(args.arch):
        meta.update(conventions=list(models.CONVENTIONS), wild_val_nme=wild_val_nme, pretrained=pretrained,
                    trained_on=sources, data_terms=data_terms(sources or {}))
    return meta


def plot_curves(history, path):
    # A bare Figure, not pyplot: no GUI backend needed, and a notebook's inline plots keep working.
    from matplotlib.figure import Figure
    validated = not all(math.isnan(h["val_nme"]) and math.isnan(h.get("wild_val_nme", math.nan))
                        for h in history)  # --val-fraction 0 (and no wild validation): loss only
    fig = Figure(figsize=(10 if validated else 5, 3.5))
    axes = fig.subplots(1, 2 if validated else 1, squeeze=False)[0]
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["loss"] for h in history])
    axes[0].set(xlabel="epoch", ylabel="training loss", title="Training loss", yscale="log")
    if validated:
        axes[1].plot(epochs, [h["val_nme"] for h in history], label="held-out people (course head)")
        title = "Validation NME (held-out people)"
        if any(math.isfinite(h.get("wild_val_nme", math.nan)) for h in history):  # the two-head network
            axes[1].plot(epochs, [h["wild_val_nme"] for h in history], label="wild photos (300-W head)")
            axes[1].legend()
            title = "Validation NME"
        axes[1].set(xlabel="epoch", ylabel="NME (%)", title=title, yscale="log")
        axes[1].grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    try:
        fig.savefig(path + ".tmp.png", dpi=100)
        os.replace(path + ".tmp.png", path)
    finally:
        if os.path.exists(path + ".tmp.png"):  # a failed write leaves no partial file
            os.remove(path + ".tmp.png")


def finish(run):
    """Save the final model (end_epoch checked its weights) with its metadata, and the curves."""
    seconds = time.time() - run.started
    val_nme = run.history[-1]["val_nme"] if run.history and run.val_set else None
    wild_val_nme = run.history[-1]["wild_val_nme"] if run.history and run.wild_val_set else None
    meta = model_meta(run.args, run.model_options, run.step, val_nme, seconds, run.command_history,
                      run.device, run.init_saw_unseen, wild_val_nme, run.pretrained,
                      trained_on(run.loader.dataset))
    saved(lambda: models.save_model(run.model.cpu(), run.args.out, meta), run.args.out,
          f"{run.args.checkpoint} holds the finished run: save it with `{resume_command(run.args)}` "
          "once it can be written")
    if run.history:
        curves = curves_path(run.args.out)
        saved(lambda: plot_curves(run.history, curves), curves, f"{run.args.out} is saved")
    final = f"final val NME {val_nme:.2f}%" if run.val_set else "no validation set"
    if wild_val_nme is not None:
        final += f", wild val NME {wild_val_nme:.2f}%"
    print(f"saved {run.args.out} ({seconds / 60:.1f} min, {final})")


def interrupted_message(args, run):
    """Where Ctrl-C left the run, and the command that continues it."""
    if run is None or run.saved_epoch is None:
        return (f"interrupted before training went on; {args.checkpoint} is as it was" if args.resume
                else "interrupted before the first epoch ended; nothing was saved")
    return f"interrupted after epoch {run.saved_epoch}; resume with `{resume_command(args)}`"


def main(argv=None, **settings):
    """`python train.py ARGV` (and any SETTINGS); returns the run's history, one dict per epoch."""
    args, run = parse_args(argv, **settings), None
    with media.stop_between_steps():
        try:
            run = start_run(args, torch.device(pick_device(args.device)))
            while not run.done():
                started = time.time()
                loss, lr = train_epoch(run)
                end_epoch(run, loss, lr, started)
            finish(run)
            return run.history
        except (media.DataError, models.ModelFileError, TrainingError) as e:
            sys.exit(f"train.py: {e}")
        except KeyboardInterrupt:
            print(f"train.py: {interrupted_message(args, run)}", file=sys.stderr)
            sys.exit(130)


if __name__ == "__main__":
    main()
