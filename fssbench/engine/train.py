"""Training engine: episodic training on a fold's base classes, shared by every trainable method.

* Episodes of epoch ``e`` are a class-uniform draw from the base-class training list seeded by
  ``(seed, e)``; torch is seeded by ``seed`` once, so a run is fixed by its seed and a resumed run
  continues exactly where the killed one stopped (RNG states are checkpointed).
* Model selection uses frozen episodes of the *base-class validation split* (``baseval``), never
  the test fold.
* ``last.pt`` (full state, for resume) and ``best.pt`` (the decoder file: method name, training
  options and state, see :mod:`fssbench.engine.checkpoint`) are written atomically after every
  epoch; ``log.csv`` gets one row per epoch (and TensorBoard, when installed). Resuming reads
  ``last.pt`` through the same checks as a decoder file.
* A NaN validation mIoU (no scorable episode) never becomes the best epoch; when every epoch's is
  NaN, no selection happens: ``best.pt`` is the last epoch's with ``selection: "last-epoch"`` and
  the summary says ``best_epoch = -1``, ``best_val_miou = nan``, ``selected = False``.
* CUDA runs use autocast (bf16); CPU runs use fp32.
* Multi-process data parallel through ``torch.distributed`` when launched by ``torchrun``
  (``WORLD_SIZE > 1``): each rank takes a strided shard of every batch, its loss weighted by the
  shard's share of the batch, gradients are averaged by DDP (so a step equals the single-process
  step on the whole batch when the method's loss is a mean over episodes), rank 0 validates and
  writes files. Tested against a single process with two CPU processes on gloo.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from fssbench.datasets.base import FSSDataset
from fssbench.engine.checkpoint import TRAIN_FORMAT, atomic_save, decoder_record, read_checkpoint, save_decoder
from fssbench.engine.data import CachedDataset, iter_batches, training_specs
from fssbench.engine.evaluate import evaluate
from fssbench.episode import collate
from fssbench.episodes import sample_episodes
from fssbench.errors import UserError
from fssbench.methods import Method, TrainConfig
from fssbench.protocols import Protocol


@dataclass
class TrainSummary:
    """``best_epoch`` -1 / ``best_val_miou`` NaN / ``selected`` False: no epoch had a number to select
    by (every validation mIoU was NaN, or no epoch ran), and ``checkpoint`` holds the last epoch."""

    epochs: int
    best_epoch: int
    best_val_miou: float
    seconds: float
    checkpoint: str
    resumed_from: int
    selected: bool = True


def seed_everything(seed: int) -> None:
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


def _rng_state() -> dict[str, Any]:
    """Every global RNG a method may draw from while training, as plain values (``weights_only``
    loading refuses numpy arrays): torch (CPU, CUDA), numpy and Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), py_gauss],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def shard_of(group: list[Any], rank: int, world: int) -> tuple[list[Any], float]:
    """This rank's episodes of ``group`` and the weight of its mean loss.

    DDP averages gradients over ranks, so with weight ``n_rank * world / n_group`` the average is
    ``sum_r n_r * mean_r / n_group``: the mean over the whole group, even when shards differ in
    size (the last, short batch). A rank left without an episode still has to run forward and
    backward (DDP's all-reduce waits for every rank): it runs the group's first episode at weight 0.
    """
    shard = group[rank::world]
    if not shard:
        return group[:1], 0.0
    return shard, len(shard) * world / len(group)


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
    data = dataset if isinstance(dataset, CachedDataset) else CachedDataset(dataset)
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
    autocast_dtype = torch.bfloat16 if device.type == "cuda" else None

    val_specs = sample_episodes(data, fold, shot, val_episodes, seed, split="baseval").episodes
    start_epoch, best_epoch, best_miou, resumed_from = 0, -1, math.nan, 0
    history: list[dict[str, Any]] = []
    last = out_dir / "last.pt"
    if last.exists():
        start_epoch, best_epoch, best_miou, history = _resume(last, method, opt, sched, cfg)
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
        def make_batch(group: list[Any]) -> Any:  # on the loading thread: this rank's shard, collated
            return collate(shard_of(group, rank, world)[0])

        for group, batch in iter_batches(data, specs, fold, kind, protocol, cfg.batch_size, make_batch):
            _, weight = shard_of(group, rank, world)
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss, _logs = model(batch)
            loss = loss * weight if world > 1 else loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_loss = loss.detach().float()
            if world > 1:  # the group's mean loss, as a single process would log it
                dist.all_reduce(step_loss)
                step_loss /= world
            losses.append(float(step_loss))
            if on_step is not None:
                on_step(len(group))
        row = {"epoch": epoch, "train_loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0]}
        if is_main:
            val = evaluate(method, data, val_specs, fold, kind, protocol, batch_size=cfg.batch_size, device=device)
            miou = float(val.metrics["miou"])
            row |= {"val_miou": miou, "val_fbiou": val.metrics["fbiou"]}
            if not math.isnan(miou) and (best_epoch < 0 or miou > best_miou):
                best_miou, best_epoch = miou, epoch
                save_decoder(method, out_dir / "best.pt", epoch=epoch, val_miou=miou, selection="best-val")
            row["seconds"] = time.perf_counter() - ep_start
            history.append(row)
            if writer is not None:
                for k, v in row.items():
                    if k != "epoch":
                        writer.add_scalar(k, v, epoch)
            atomic_save(
                {
                    "format": TRAIN_FORMAT,
                    **decoder_record(method),
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
    if world > 1:  # only rank 0 validates: every rank reports (and decides on) its selection
        shared = [best_epoch, best_miou]
        dist.broadcast_object_list(shared, src=0)
        best_epoch, best_miou = int(shared[0]), float(shared[1])
    selected = best_epoch >= 0
    if not selected and is_main:  # nothing to select by: the decoder is the last epoch's
        save_decoder(method, out_dir / "best.pt", epoch=cfg.epochs - 1, val_miou=math.nan, selection="last-epoch")
    if world > 1:
        dist.barrier()
    return TrainSummary(
        epochs=cfg.epochs,
        best_epoch=best_epoch,
        best_val_miou=best_miou if selected else math.nan,
        seconds=time.perf_counter() - t0,
        checkpoint=str(out_dir / "best.pt"),
        resumed_from=resumed_from,
        selected=selected,
    )


def _resume(
    last: Path, method: Method, opt: torch.optim.Optimizer, sched: Any, cfg: TrainConfig
) -> tuple[int, int, float, list[dict[str, Any]]]:
    """Restore method, optimiser, schedule and RNG states from ``last``; returns (next epoch, best
    epoch, best mIoU, history). A broken or foreign file, or one written under other training
    settings (only ``epochs`` may grow or shrink: that continues or cuts the same schedule of
    episodes), is a one-line error whose fix is to delete it (training then restarts from scratch)."""
    fix = "delete it to restart training from scratch"
    state = read_checkpoint(last, method, what="training checkpoint", fmt=TRAIN_FORMAT, fix=fix)
    saved, ours = dict(state.get("config") or {}), asdict(cfg)
    diff = [k for k in ours if k != "epochs" and saved.get(k) != ours[k]]
    if diff:
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {ours[k]!r})" for k in diff[:3])
        raise UserError(f"training checkpoint file {last} was written with other training settings: {shown}; {fix}")
    try:
        method.load_trainable_state(state["state"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"])
        out = int(state["epoch"]) + 1, int(state["best_epoch"]), float(state["best_miou"]), list(state["history"])
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else "incomplete"
        raise UserError(f"training checkpoint file {last} does not fit this training ({type(exc).__name__}: {why}); {fix}") from None
    return out


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
