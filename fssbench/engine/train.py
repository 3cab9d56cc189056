"""Training engine: episodic training on a fold's base classes, shared by every trainable method.

* Episodes of epoch ``e`` are a class-uniform draw from the base-class training list seeded by
  ``(seed, e)``; torch is seeded by ``seed`` once, so a run is fixed by its seed and a resumed run
  continues exactly where the killed one stopped (RNG states are checkpointed).
* Model selection uses frozen episodes of the *base-class validation split* (``baseval``), never
  the test fold.
* ``last.pt`` (full state, for resume) and ``best.pt`` (method state only) are written atomically
  after every epoch; ``log.csv`` gets one row per epoch (and TensorBoard, when installed).
* CUDA runs use autocast (bf16); CPU runs use fp32.
* Multi-process data parallel through ``torch.distributed`` when launched by ``torchrun``
  (``WORLD_SIZE > 1``): each rank takes a strided shard of every batch, gradients are averaged by
  DDP, rank 0 validates and writes files. Tested with two CPU processes on gloo.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from fssbench.datasets.base import FSSDataset
from fssbench.engine.data import CachedDataset, batched, iter_episodes, training_specs
from fssbench.engine.evaluate import evaluate
from fssbench.episode import collate
from fssbench.episodes import sample_episodes
from fssbench.errors import UserError
from fssbench.methods import Method, TrainConfig
from fssbench.protocols import Protocol


@dataclass
class TrainSummary:
    epochs: int
    best_epoch: int
    best_val_miou: float
    seconds: float
    checkpoint: str
    resumed_from: int


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    name = cfg.optimizer.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise UserError(f"unknown optimizer '{cfg.optimizer}'; use adam, adamw or sgd")


def build_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "constant":
        fn: Callable[[int], float] = lambda s: 1.0  # noqa: E731
    elif cfg.schedule == "cosine":
        fn = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(steps, 1)))  # noqa: E731
    elif cfg.schedule == "poly":
        fn = lambda s: (1 - min(s, steps) / max(steps, 1)) ** 0.9  # noqa: E731
    else:
        raise UserError(f"unknown schedule '{cfg.schedule}'; use constant, cosine or poly")
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)


def _atomic_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def distributed_context() -> tuple[int, int]:
    """(rank, world_size); initialises the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def train(
    method: Method,
    dataset: FSSDataset,
    fold: int,
    protocol: Protocol,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    seed: int = 0,
    shot: int = 1,
    kind: str = "mask",
    val_episodes: int = 200,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainSummary:
    """Train ``method`` on ``fold``'s base classes; resumes from ``out_dir/last.pt`` when present.

    ``on_step(n)``: ``n`` more training episodes are done (on resume, first the finished epochs'
    episodes, so a progress bar starts where the checkpoint left off)."""
    out_dir = Path(out_dir)
    device = torch.device(device)
    rank, world = distributed_context()
    is_main = rank == 0
    data = CachedDataset(dataset)
    seed_everything(seed)
    method.to(device)
    params = [p for p in method.parameters() if p.requires_grad]
    if not params:
        raise UserError(f"method '{method.name}' has no trainable parameters; set train: false for it")
    model: torch.nn.Module = _LossModule(method)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = build_optimizer(params, cfg)
    steps_per_epoch = math.ceil(cfg.episodes_per_epoch / cfg.batch_size)
    sched = build_schedule(opt, cfg, steps_per_epoch * cfg.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    val_specs = sample_episodes(data, fold, shot, val_episodes, seed, split="baseval").episodes
    start_epoch, best_epoch, best_miou, resumed_from = 0, -1, -1.0, 0
    history: list[dict[str, Any]] = []
    last = out_dir / "last.pt"
    if last.exists():
        state = torch.load(last, map_location="cpu", weights_only=True)
        method.load_trainable_state(state["method"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        start_epoch, best_epoch, best_miou = state["epoch"] + 1, state["best_epoch"], state["best_miou"]
        history = list(state.get("history", []))
        resumed_from = start_epoch
        if on_step is not None:  # progress displays start where the checkpoint left off
            on_step(start_epoch * cfg.episodes_per_epoch)
    writer = _tensorboard(out_dir) if is_main else None
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        ep_start = time.perf_counter()
        method.train()
        specs = training_specs(data, fold, shot, cfg.episodes_per_epoch, seed, epoch)
        losses: list[float] = []
        for group in batched(iter_episodes(data, specs, fold, kind, protocol), cfg.batch_size):
            shard = group[rank::world] or group[:1]
            batch = collate(shard).to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss, _logs = model(batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(group))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0]}
        if is_main:
            val = evaluate(method, data, val_specs, fold, kind, protocol, batch_size=cfg.batch_size, device=device)
            row |= {"val_miou": val.metrics["miou"], "val_fbiou": val.metrics["fbiou"]}
            if val.metrics["miou"] > best_miou:
                best_miou, best_epoch = val.metrics["miou"], epoch
                _atomic_save(method.trainable_state(), out_dir / "best.pt")
            row["seconds"] = time.perf_counter() - ep_start
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch)
            _atomic_save(
                {
                    "method": method.trainable_state(),
                    "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(),
                    "rng": _rng_state(),
                    "epoch": epoch,
                    "best_epoch": best_epoch,
                    "best_miou": best_miou,
                    "history": history,
                    "config": asdict(cfg),
                },
                last,
            )
            _write_csv(out_dir / "log.csv", history)
        if world > 1:
            dist.barrier()
        if on_epoch is not None and is_main:
            on_epoch(row)
    if writer is not None:
        writer.close()
    if cfg.epochs == 0 or best_epoch < 0:
        _atomic_save(method.trainable_state(), out_dir / "best.pt")
    return TrainSummary(
        epochs=cfg.epochs,
        best_epoch=best_epoch,
        best_val_miou=best_miou,
        seconds=time.perf_counter() - t0,
        checkpoint=str(out_dir / "best.pt"),
        resumed_from=resumed_from,
    )


class _LossModule(torch.nn.Module):
    """``method.loss`` as ``forward``: one training path that DDP can wrap (so gradients are all-reduced),
    leaving each method free to define its own ``forward``."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.method.loss(batch)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the per-epoch log from the checkpointed history (so a resumed run never duplicates rows)."""
    from fssbench.episodes import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out_dir / "tb"))
