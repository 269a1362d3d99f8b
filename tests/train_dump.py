"""test_distributed's worker: `python train_dump.py DUMP_DIR TRAIN_ARGS...` (under torchrun or not)
runs train.main(TRAIN_ARGS) and then saves what that process ended with to DUMP_DIR/rank<R>.pt: the
world size, its final parameters, and its loss at each of the optimisation steps it ran.

The losses are caught by wrapping train.train_step, which also hands over the network it trains,
so train.py needs no testing option.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402

real_train_step = train.train_step
seen = {"model": None, "losses": []}


def recording_train_step(model, *args, **kwargs):
    loss = real_train_step(model, *args, **kwargs)
    seen["model"], seen["losses"] = model, seen["losses"] + [loss]
    return loss


def main(dump_dir, argv):
    train.train_step = recording_train_step
    train.main(argv)
    model = getattr(seen["model"], "module", seen["model"])  # DDP wraps the network in .module
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    parameters = {name: p.detach().cpu() for name, p in model.named_parameters()}
    os.makedirs(dump_dir, exist_ok=True)
    torch.save(dict(world_size=world_size, parameters=parameters, losses=seen["losses"]),
               os.path.join(dump_dir, f"rank{rank}.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
