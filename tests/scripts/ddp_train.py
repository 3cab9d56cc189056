"""Trains the toy decoder on toy data, under torchrun (DDP, one file per rank) or alone (one file).

Used by tests/test_ddp.py to compare DDP against a single process on the same batches. The data
has no ignore pixels, so the toy decoder's loss (cross-entropy averaged over every query pixel of
the batch, all queries 32 x 32) is an equally weighted mean over episodes: the property under
which a sharded step equals the whole-batch step (see ``fssbench.engine.train.shard_of``).
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from fssbench.engine.train import train
from fssbench.methods import TrainConfig
from fssbench.protocols import get_protocol
from tests.toy import ToyBackbone, ToyDataset, ToyDecoder


class NoIgnoreToy(ToyDataset):
    def load_label(self, name: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
        mask, ignore = super().load_label(name, class_id)
        return mask, np.zeros_like(ignore)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    method = ToyDecoder(ToyBackbone())
    # 7 episodes in batches of 3: groups of 3, 3, 1, so shards of (2, 1) and (1, none) across two
    # ranks: unequal and empty shards are both exercised. SGD, not Adam: Adam's first steps move
    # each weight by about lr * sign(gradient), which turns a rounding-level gradient difference
    # on a near-zero gradient into an lr-sized weight difference and would hide real errors.
    cfg = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, epochs=2, episodes_per_epoch=7, batch_size=3, val_episodes=4)
    summary = train(method, NoIgnoreToy(), 0, get_protocol("hsnet", img_size=32), cfg, out, seed=0, val_episodes=4)
    rank = dist.get_rank() if dist.is_initialized() else None
    name = "single" if rank is None else f"rank{rank}"
    torch.save(method.trainable_state(), out / f"{name}.pt")
    (out / f"{name}.json").write_text(json.dumps(asdict(summary)))
    if rank is not None:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
