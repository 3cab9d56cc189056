"""Launched by torchrun in tests/test_ddp.py: trains the toy decoder on the toy dataset with DDP."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from fssbench.engine.train import train
from fssbench.methods import TrainConfig
from fssbench.protocols import get_protocol
from tests.toy import ToyBackbone, ToyDataset, ToyDecoder

out = Path(sys.argv[1])
torch.manual_seed(0)
method = ToyDecoder(ToyBackbone())
cfg = TrainConfig(epochs=2, episodes_per_epoch=8, batch_size=4, val_episodes=4, lr=0.05)
summary = train(method, ToyDataset(), 0, get_protocol("hsnet", img_size=32), cfg, out, seed=0)
rank = dist.get_rank()
torch.save(method.trainable_state(), out / f"rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
