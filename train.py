"""Train the facial keypoint CNN on the course data.

    python train.py                                  # the default run: a few minutes on a laptop CPU
    python train.py --epochs 200 --out saved_models/long.pt
    python train.py --resume                         # continue an interrupted run
    python train.py --init saved_models/keypoints_model.pt --lr 1e-3   # fine-tune a saved model
    torchrun --nproc_per_node 2 train.py             # the same script, several processes (DDP)

Every default below can be overridden on the command line (`--batch-size 128`). Each image is
decoded once into memory; each sample is then one affine warp of a jittered detector-like box
(see data_load.FaceCropAugment). Per epoch: training loss and validation NME on held-out people.
A checkpoint is written atomically after every epoch; the final model goes to --out with its
metadata and a PNG of the curves.
"""

import argparse
import datetime
import math
import os
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from data_load import (
    CROP_MARGIN,
    CROP_SHIFT,
    CachedFaceDataset,
    DataError,
    data_dir,
    identity_of,
    read_keypoints_csv,
)
from evaluate import nme_per_face
from models import ModelFileError, build_model, load_model, save_model

DEFAULTS = dict(
    arch="net",            # models.ARCHITECTURES
    input_size=112,        # crop side in pixels
    dropout=None,          # override the model's dropout (Net: 0.0)
    widths=None,           # Net's five conv widths, e.g. "32,64,96,192,384" (default: models.Net's)
    hidden=None,           # Net's hidden fully-connected width (default: models.Net's)
    init=None,             # start from this saved model (fine-tuning): its weights, arch, input size, options
    epochs=80,
    batch_size=64,         # global batch, split over processes under torchrun
    loss="wing",           # wing | mse | l1
    lr=3e-3,
    weight_decay=1e-4,
    warmup_epochs=1,
    val_fraction=0.1,      # share of training *people* held out for validation
    seed=1337,
    augment=True,
    rotation=20.0,         # training rotations: normal with std rotation/2, clipped at +-rotation degrees
    limit=0,               # use only the first N training images (0 = all): quick runs and tests
    max_steps=0,           # stop after N optimisation steps (0 = no limit): tests
    threads=0,             # torch CPU threads per process (0 = PyTorch's default)
    workers=0,             # DataLoader worker processes preparing crops (0 = in the training process)
    device="auto",         # auto (CUDA when available, else CPU) | cpu | cuda
    data=None,             # dataset folder (default: $FKP_DATA, else ./data)
    out="saved_models/trained_model.pt",  # the shipped model is saved_models/keypoints_model.pt
    checkpoint=None,       # default: <out>.ckpt
    resume=False,
    progress=True,
    rank_dump=None,        # tests: each process saves its final weights and step losses to DIR/rank<R>.pt
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for name, default in DEFAULTS.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help="default: %(default)s")
        else:
            kind = {"dropout": float, "hidden": int}.get(name, type(default) if default is not None else str)
            parser.add_argument(flag, type=kind, default=default, help="default: %(default)s")
    args = parser.parse_args(argv)
    # The command line this run stands for, recorded in the model's metadata (also when a
    # notebook calls train.main([...]) instead of the shell running train.py).
    args.command = " ".join(["python train.py", *(sys.argv[1:] if argv is None else argv)])
    args.data = args.data or data_dir()
    args.checkpoint = args.checkpoint or args.out + ".ckpt"
    return args


def wing_loss(pred, target, w=10.0, eps=2.0, scale=56.0):
    """Wing loss (Feng et al., CVPR 2018) on errors in crop pixels: log-shaped for small errors, so
    the last pixel of accuracy still pulls, linear for large ones, so outliers do not dominate."""
    x = (pred - target).abs() * scale
    c = w - w * math.log(1 + w / eps)
    return torch.where(x < w, w * torch.log1p(x / eps), x - c).mean()


def keypoint_loss(name, pred, target, input_size):
    """The training loss by name; all three compare normalised coordinates."""
    if name == "wing":
        return wing_loss(pred, target, scale=input_size / 2)
    if name == "mse":
        return torch.nn.functional.mse_loss(pred, target)
    if name == "l1":
        return torch.nn.functional.l1_loss(pred, target)
    raise ValueError(f"unknown loss {name!r}; choose wing, mse or l1")


def split_by_person(csv_file, val_fraction, seed, limit=0):
    """Train/validation row indices, holding out whole people so validation is on unseen faces."""
    names = list(read_keypoints_csv(csv_file).iloc[:, 0])
    if limit:
        names = names[:limit]
    people = sorted({identity_of(n) for n in names})
    rng = np.random.default_rng(seed)
    held_out = set(rng.choice(people, size=int(round(len(people) * val_fraction)), replace=False))
    train = [i for i, n in enumerate(names) if identity_of(n) not in held_out]
    val = [i for i, n in enumerate(names) if identity_of(n) in held_out]
    return train, val


def build_datasets(args, progress=False):
    csv_file = os.path.join(args.data, "training_frames_keypoints.csv")
    images = os.path.join(args.data, "training")
    train_idx, val_idx = split_by_person(csv_file, args.val_fraction, args.seed, args.limit)
    train_set = CachedFaceDataset(csv_file, images, args.input_size, train=args.augment,
                                  indices=train_idx, progress=progress, rotation=args.rotation)
    val_set = CachedFaceDataset(csv_file, images, args.input_size, train=False, indices=val_idx,
                                progress=progress) if val_idx else None
    return train_set, val_set


@torch.no_grad()
def validation_nme(model, val_set, batch_size=256, device="cpu"):
    """Mean NME (%) on the validation crops (NME is scale-free, so crop coordinates do)."""
    model.eval()
    errors = []
    for images, targets in DataLoader(val_set, batch_size=batch_size):
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


def load_checkpoint(path, rank, world_size):
    """The checkpoint dict, or None when there is none. Rank 0 reads it and sends it to the other
    ranks: only rank 0 writes checkpoints, so on several machines only its machine has the file."""
    ckpt = None
    if rank == 0 and os.path.isfile(path):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if world_size > 1:
        box = [ckpt]
        dist.broadcast_object_list(box, src=0)
        ckpt = box[0]
    return ckpt


def mean_over_ranks(value, world_size, device):
    """The mean of a number over all processes (each process's own value when alone)."""
    if world_size == 1:
        return float(value)
    total = torch.tensor(float(value), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / world_size


def save_checkpoint(path, **state):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    else:
        model_options = {"dropout": args.dropout, "hidden": args.hidden,
                         "widths": [int(w) for w in args.widths.split(",")] if args.widths else None}
        model_options = {name: value for name, value in model_options.items() if value is not None}
        model, init_meta = build_model(args.arch, args.input_size, **model_options), {}
    # channels_last: the same weights, about 20 % faster convolutions on a CPU.
    return model.train().to(memory_format=torch.channels_last), model_options, init_meta


def train_step(model, optimizer, images, targets, loss_name, input_size, device="cpu"):
    """One optimisation step on a batch (images channels_last, like the model); returns the loss."""
    pred = model(images.to(device, memory_format=torch.channels_last)).view(-1, 68, 2)
    loss = keypoint_loss(loss_name, pred, targets.to(device), input_size)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def train(args):
    """Run training as configured; returns the per-epoch history (list of dicts)."""
    rank, world_size, device = setup_distributed(pick_device(args.device))
    master = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch_size % world_size:
        raise ValueError(f"--batch-size {args.batch_size} must divide by the {world_size} processes")
    # Augmentation draws (NumPy: crop, rotation; torch: flip, colour) differ per process. The
    # weights start equal anyway: DDP copies rank 0's (seeded as a single process) to every rank.
    torch.manual_seed(args.seed + rank)
    np.random.seed(args.seed + rank)

    model, model_options, init_meta = initial_model(args)
    model = model.to(device)

    t0 = time.time()
    train_set, val_set = build_datasets(args, progress=args.progress and master)
    sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=args.seed, drop_last=True)
    loader = DataLoader(train_set, batch_size=args.batch_size // world_size, sampler=sampler, drop_last=True,
                        num_workers=args.workers, persistent_workers=args.workers > 0)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise DataError(f"too few training images ({len(train_set)}) for batch size {args.batch_size}")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps)

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start_epoch, step, history = 0, 0, []
    ckpt = load_checkpoint(args.checkpoint, rank, world_size) if args.resume else None
    if ckpt:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, step, history = ckpt["epoch"], ckpt["step"], ckpt["history"]
        if master:
            print(f"resumed from {args.checkpoint}: epoch {start_epoch}, step {step}")
    ddp_model = torch.nn.parallel.DistributedDataParallel(model) if world_size > 1 else model
    if master:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{args.arch}: {n_params / 1e6:.2f}M parameters, {len(train_set)} training / "
              f"{len(val_set) if val_set else 0} validation faces, {world_size} process(es) on {device}, "
              f"{steps_per_epoch} steps per epoch (data ready in {time.time() - t0:.0f}s)")

    warmup_steps = args.warmup_epochs * steps_per_epoch
    step_losses = []  # this process's loss at every step, for --rank-dump
    for epoch in range(start_epoch, args.epochs):
        if step >= total_steps:
            break
        sampler.set_epoch(epoch)
        epoch_start, losses = time.time(), []
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False,
                   disable=not (args.progress and master))
        for images, targets in bar:
            lr = lr_at(step, total_steps, warmup_steps, args.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(ddp_model, optimizer, images, targets, args.loss, args.input_size, device)
            losses.append(loss)
            step += 1
            step_losses.append((step, losses[-1]))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step >= total_steps:
                break
        epoch_loss = mean_over_ranks(np.mean(losses), world_size, device)  # every rank takes part
        if master:
            val_nme = validation_nme(model, val_set, device=device) if val_set else float("nan")
            history.append(dict(epoch=epoch + 1, step=step, loss=epoch_loss, val_nme=val_nme,
                                lr=lr, seconds=time.time() - epoch_start))
            val_text = f"val NME {val_nme:.2f}%" if val_set else "no validation"
            print(f"epoch {epoch + 1:3d}/{args.epochs}  loss {history[-1]['loss']:.4f}  "
                  f"{val_text}  lr {lr:.2e}  {history[-1]['seconds']:.1f}s", flush=True)
            save_checkpoint(args.checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            epoch=epoch + 1, step=step, history=history, args=vars(args))

    if master:
        train_seconds = time.time() - t0
        meta = dict(arch=args.arch, input_size=args.input_size, model_options=model_options,
                    crop_margin=CROP_MARGIN,
                    crop_shift=CROP_SHIFT, grayscale=True, pixel_scale="gray / 255",
                    keypoint_norm="(p - (input_size - 1) / 2) / ((input_size - 1) / 2), crop pixels",
                    epochs=args.epochs, steps=step, train_seconds=round(train_seconds, 1),
                    val_nme=history[-1]["val_nme"] if history and val_set else None,
                    command=args.command,
                    command_history=[*earlier_commands(init_meta), args.command],
                    world_size=world_size, device=str(device), torch=str(torch.__version__),
                    created=time.strftime("%Y-%m-%d %H:%M:%S"))
        save_model(model.cpu(), args.out, meta)
        if history:
            plot_curves(history, os.path.splitext(args.out)[0] + "_curves.png")
        final = f"final val NME {meta['val_nme']:.2f}%" if val_set else "no validation set"
        print(f"saved {args.out} ({train_seconds / 60:.1f} min, {final})")
    if args.rank_dump:
        parameters = {name: p.detach() for name, p in model.named_parameters()}
        save_checkpoint(os.path.join(args.rank_dump, f"rank{rank}.pt"), world_size=world_size,
                        parameters=parameters, step_losses=step_losses)
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return history


def main(argv=None):
    args = parse_args(argv)
    try:
        return train(args)
    except (DataError, ModelFileError) as e:
        sys.exit(f"train.py: {e}")


if __name__ == "__main__":
    main()
