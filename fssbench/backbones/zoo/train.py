"""Deterministic pretraining of the zoo on the synthetic world's pretraining classes.

Everything that could vary is pinned: the data (``render_pretrain_batch`` with fixed seeds; an
image depends only on its seed and index, so rendering in worker processes changes nothing), the
initialisation and batch order (``torch.manual_seed(spec.seed)`` and a seeded ``torch.Generator``),
the kernels (``torch.use_deterministic_algorithms(True)``) and the thread count: every model
trains **single-threaded** (``torch.set_num_threads(1)``; CPU reductions are split by thread, so
1 and 2 threads give different bits), and the machine's cores are used by training models in
parallel worker processes (``jobs``, default 2) instead. Single-threaded workers are also far more
robust on a shared machine: with 2 OpenMP threads on 2 busy cores a step took 4-8 s instead of
0.1 s. Which worker trains a model, and how many workers there are, changes nothing. On one
machine two builds give byte-identical checkpoints; across CPUs/torch versions the numbers may
differ in the last bits, which is why shipped checkpoints carry their own checksums.

Check figures (written to the manifest, shown by ``fssbench zoo list``) are measured on held-out
pretraining images (a separate seed) with the fp16 weights exactly as stored:
``heldout_top1`` (supervised: classifier accuracy; CLIP: zero-shot accuracy against
``"a photo of a {name}"`` for the 48 classes); ``fss_probe_miou``: a training-free 1-shot
prototype probe on the *fold* (novel) classes, which says whether the features transfer (random
weights score 0.09-0.13); CLIP also ``fold_text_top1``: zero-shot naming of novel objects (chance 0.05).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from functools import lru_cache
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.zoo.models import ZooBackbone, ZooCLIP
from fssbench.backbones.zoo.specs import IMAGE_SIZE, ZOO, ZooSpec, get_spec
from fssbench.workers import ForkPool, can_fork
from fssbench.backbones.zoo.store import (
    build_network,
    checkpoint_bytes,
    checkpoint_file,
    num_params,
    read_manifest,
    write_manifest,
    wrap_backbone,
)

THREADS = 1  # torch threads per model (part of the recipe: changing it changes the bits)
JOBS = 2  # parallel model-training processes (changes nothing but the wall time)
TRAIN_SEED = 7001  # render seed of the training pool
HELDOUT_SEED = 7002  # render seed of the held-out images (check figures)
PROBE_SEED = 7003  # seed of the fold-class images of the FSS probe
N_TRAIN = 12288
N_HELDOUT = 1024
N_PROBE = 120  # fold-class images -> 20 classes x 3 episodes x (support, query)
LABEL_SMOOTHING = 0.1

Progress = Callable[[str, int, int], None]  # (what, done, total)


# --------------------------------------------------------------------------- determinism


@contextmanager
def deterministic(threads: int = THREADS) -> Iterator[None]:
    """Deterministic kernels and a fixed thread count for the duration; restored afterwards."""
    from fssbench.workers import threads as pinned

    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    with pinned(threads):
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


# --------------------------------------------------------------------------- data


def _render_chunk(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from fssbench.synth.render import render_pretrain_batch

    seed, n, size, start = args
    return render_pretrain_batch(seed, n, size, start=start)


def render_pool(seed: int, n: int, size: int = IMAGE_SIZE, workers: int = JOBS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` pretraining images of the ``seed`` stream as tensors: images uint8 [n,3,s,s],
    labels int64 [n], masks uint8 [n,s,s]. The result does not depend on ``workers``."""
    chunk = 256
    jobs = [(seed, min(chunk, n - s), size, s) for s in range(0, n, chunk)]
    if workers > 1 and len(jobs) > 1 and can_fork():
        # fork: workers only run numpy/scikit-image, and it works from unguarded scripts too
        with ForkPool(workers) as pool:
            parts = [f.result() for f in [pool.submit(_render_chunk, j) for j in jobs]]
    else:
        parts = [_render_chunk(j) for j in jobs]
    images = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, size, size, 3), np.uint8)
    labels = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0,), np.int64)
    masks = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, size, size), np.uint8)
    return (
        torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(labels).long(),
        torch.from_numpy(masks).contiguous(),
    )


@dataclass
class Pools:
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    heldout: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


_POOL_CACHE: dict[tuple[int, int], Pools] = {}


def get_pools(n_train: int = N_TRAIN, n_heldout: int = N_HELDOUT, workers: int = JOBS) -> Pools:
    key = (n_train, n_heldout)
    if key not in _POOL_CACHE:
        _POOL_CACHE.clear()
        _POOL_CACHE[key] = Pools(render_pool(TRAIN_SEED, n_train, workers=workers), render_pool(HELDOUT_SEED, n_heldout, workers=workers))
    return _POOL_CACHE[key]


def augment(images: torch.Tensor, masks: torch.Tensor, gen: torch.Generator, pad: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Random horizontal flip + random translation (reflect-pad and crop), same for the masks."""
    b, _, h, w = images.shape
    flip = torch.rand(b, generator=gen) < 0.5
    offs = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen)
    x = images.float().div(255.0)
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    m = torch.where(flip.view(b, 1, 1), masks.flip(2), masks)
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    mp = F.pad(m.unsqueeze(1).float(), (pad, pad, pad, pad), mode="constant", value=0.0)
    xs, ms = [], []
    for i in range(b):
        dy, dx = int(offs[i, 0]), int(offs[i, 1])
        xs.append(xp[i, :, dy : dy + h, dx : dx + w])
        ms.append(mp[i, 0, dy : dy + h, dx : dx + w])
    return torch.stack(xs), torch.stack(ms)


# --------------------------------------------------------------------------- training


def _param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or "pos" in name or "cls_token" in name or "embedding" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _lr_at(step: int, steps: int, warmup: int, lr: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * 0.5 * (1.0 + math.cos(math.pi * t))


def _seg_target(masks: torch.Tensor, labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-cell target: label+1 where the object covers at least half the cell, else 0."""
    cover = F.adaptive_avg_pool2d(masks.unsqueeze(1), size).squeeze(1)
    return torch.where(cover >= 0.5, labels.view(-1, 1, 1) + 1, torch.zeros_like(labels).view(-1, 1, 1))


def train_network(
    spec: ZooSpec,
    pools: Pools,
    steps: int | None = None,
    batch: int | None = None,
    progress: Progress | None = None,
) -> nn.Module:
    """Train ``spec``'s network from its seed; deterministic given the pools and budget."""
    steps = spec.steps if steps is None else steps
    batch = spec.batch if batch is None else batch
    torch.manual_seed(spec.seed)
    net = build_network(spec)
    gen = torch.Generator().manual_seed(spec.seed)
    images, labels, masks = pools.train
    n = images.shape[0]
    warmup = min(spec.warmup, max(1, steps // 5))
    opt = torch.optim.AdamW(_param_groups(net, spec.weight_decay), lr=spec.lr, betas=(0.9, 0.98))
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)
    clip_loss = None
    by_class: list[torch.Tensor] = []
    if isinstance(net, ZooCLIP):
        from open_clip.loss import ClipLoss

        from fssbench.synth.classes import PROMPT_TEMPLATE, pretrain_class_names

        clip_loss = ClipLoss()
        names = pretrain_class_names()
        tokens = net.tokenizer([PROMPT_TEMPLATE.format(c) for c in names])
        by_class = [torch.nonzero(labels == c).flatten() for c in range(len(names))]
        present = torch.tensor([c for c in range(len(names)) if len(by_class[c])])
        batch = min(batch, len(present))
    net.train()
    order = torch.randperm(n, generator=gen)
    pos = 0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, warmup, spec.lr)
        if clip_loss is None:
            if pos + batch > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + batch]
            pos += batch
        else:
            cls = present[torch.randperm(len(present), generator=gen)[:batch]]
            pick = [by_class[int(c)][int(torch.randint(len(by_class[int(c)]), (1,), generator=gen))] for c in cls]
            idx = torch.stack(pick)
        x, m = augment(images[idx], masks[idx], gen)
        x = (x - mean) / std
        y = labels[idx]
        if clip_loss is not None:
            img_f = net.encode_image(x)
            txt_f = net.encode_text(tokens[y])
            loss = clip_loss(img_f, txt_f, net.logit_scale.exp())
        else:
            logits, seg = net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
            if seg is not None and spec.aux_seg > 0:
                target = _seg_target(m, y, tuple(seg.shape[-2:]))
                loss = loss + spec.aux_seg * F.cross_entropy(seg, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if clip_loss is not None:
            with torch.no_grad():
                net.logit_scale.clamp_(0, math.log(100))
        if progress is not None:
            progress(spec.name, step + 1, steps)
    net.eval()
    return net


# --------------------------------------------------------------------------- check figures


@torch.no_grad()
def heldout_top1(bb: ZooBackbone, pools: Pools, chunk: int = 256) -> float:
    """Supervised: classifier top-1; CLIP: zero-shot top-1 against the 48 class prompts."""
    images, labels, _ = pools.heldout
    net = bb.net
    correct = 0
    text = None
    if isinstance(net, ZooCLIP):
        from fssbench.synth.classes import PROMPT_TEMPLATE, pretrain_class_names

        text = bb.encode_text([PROMPT_TEMPLATE.format(c) for c in pretrain_class_names()])
    for s in range(0, images.shape[0], chunk):
        x = images[s : s + chunk].float() / 255.0
        if text is not None:
            pred = (bb.encode_image(x) @ text.T).argmax(1)
        else:
            logits, _ = net(bb.normalize(x))
            pred = logits.argmax(1)
        correct += int((pred == labels[s : s + chunk]).sum())
    return correct / max(1, images.shape[0])


@lru_cache(maxsize=2)
def _probe_images(n_images: int = N_PROBE) -> dict[int, list[tuple[np.ndarray, np.ndarray]]]:
    """Fold-class images of the probe: ``n_images / 20`` per class (image, label map), fixed seed."""
    from fssbench.synth.classes import fold_classes
    from fssbench.synth.render import render_fss_image

    per_class: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {c.id: [] for c in fold_classes()}
    i = 0
    need = max(2, n_images // len(per_class))
    while any(len(v) < need for v in per_class.values()) and i < 40 * n_images:
        img = render_fss_image(PROBE_SEED, "val", i)
        i += 1
        for c in img.classes:
            if len(per_class[c]) < need:
                per_class[c].append((img.image, img.label))
                break
    return per_class


@torch.no_grad()
def fold_text_top1(bb: ZooBackbone, n_images: int = N_PROBE) -> float:
    """CLIP model only: zero-shot naming of *novel* objects. The dense image embedding is
    averaged over each probe image's ground-truth object region and matched against the 20 fold
    class prompts (names never seen in pretraining, made of seen words); chance is 0.05."""
    from fssbench.synth.classes import PROMPT_TEMPLATE, fold_classes

    classes = fold_classes()
    text = bb.encode_text([PROMPT_TEMPLATE.format(c.name) for c in classes])
    ids = [c.id for c in classes]
    correct = total = 0
    for cid, items in _probe_images(n_images).items():
        for image, label in items:
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            dense = bb.dense_image_embedding(x)
            m = torch.from_numpy((label == cid).astype(np.float32))[None, None]
            m = F.adaptive_avg_pool2d(m, dense.shape[-2:])
            region = F.normalize((dense * m).sum((2, 3)), dim=1)
            correct += int(ids[int((region @ text.T).argmax())] == cid)
            total += 1
    return correct / max(1, total)


@torch.no_grad()
def fss_probe_miou(bb: ZooBackbone, n_images: int = N_PROBE) -> float:
    """Training-free 1-shot probe on the 20 fold (novel) classes.

    For each class, episodes pair a support and a query image from a fixed render seed; the
    query is segmented by nearest prototype (masked-average fg and bg prototypes of the
    support's stages 2 and 3, cosine similarity averaged over the two). Returns
    the foreground IoU averaged over classes (band pixels ignored).
    """
    from fssbench.synth.render import IGNORE

    per_class = _probe_images(n_images)
    names = [s.name for s in bb.stage_layers[1:3]]
    ious = []
    for cid, items in per_class.items():
        inter = union = 0
        for k in range(0, len(items) - 1, 2):
            (s_img, s_lab), (q_img, q_lab) = items[k], items[k + 1]
            sx = torch.from_numpy(s_img).permute(2, 0, 1)[None].float() / 255.0
            qx = torch.from_numpy(q_img).permute(2, 0, 1)[None].float() / 255.0
            sf = bb(sx, names)
            qf = bb(qx, names)
            s_m = torch.from_numpy((s_lab == cid).astype(np.float32))[None, None]
            s_valid = torch.from_numpy((s_lab != IGNORE).astype(np.float32))[None, None]
            sims_fg, sims_bg = [], []
            for nm in names:
                f = F.normalize(sf[nm], dim=1)
                fm = F.interpolate(s_m, size=f.shape[-2:], mode="bilinear", align_corners=False)
                fv = F.interpolate(s_valid, size=f.shape[-2:], mode="bilinear", align_corners=False)
                bgm = (fv - fm).clamp(min=0)
                p_fg = F.normalize((f * fm).sum((2, 3)) / fm.sum().clamp(min=1e-6), dim=1)
                p_bg = F.normalize((f * bgm).sum((2, 3)) / bgm.sum().clamp(min=1e-6), dim=1)
                q = F.normalize(qf[nm], dim=1)
                size = q_lab.shape
                sims_fg.append(F.interpolate(torch.einsum("bchw,bc->bhw", q, p_fg)[:, None], size=size, mode="bilinear", align_corners=False))
                sims_bg.append(F.interpolate(torch.einsum("bchw,bc->bhw", q, p_bg)[:, None], size=size, mode="bilinear", align_corners=False))
            pred = (torch.stack(sims_fg).mean(0) > torch.stack(sims_bg).mean(0))[0, 0].numpy()
            valid = q_lab != IGNORE
            gt = q_lab == cid
            inter += int((pred & gt & valid).sum())
            union += int(((pred | gt) & valid).sum())
        ious.append(inter / max(1, union))
    return float(np.mean(ious))


# --------------------------------------------------------------------------- build


def build_one(
    name: str,
    pools: Pools,
    steps: int | None = None,
    batch: int | None = None,
    progress: Progress | None = None,
    probe: bool = True,
) -> tuple[bytes, dict[str, Any]]:
    """Train one model; returns the checkpoint bytes and its manifest entry (without placement)."""
    import hashlib
    import io

    from fssbench.backbones.weights import load_weights_into

    spec = get_spec(name)
    t0 = time.perf_counter()
    with deterministic():
        net = train_network(spec, pools, steps=steps, batch=batch, progress=progress)
        data = checkpoint_bytes(net.state_dict())
        train_s = time.perf_counter() - t0
        # check figures on the weights exactly as stored (fp16 -> fp32)
        stored = build_network(spec)
        buf = io.BytesIO(data)
        sd = torch.load(buf, map_location="cpu", weights_only=True)
        load_weights_into(stored, sd, path=f"<{name}>", backbone=name)
        bb = wrap_backbone(spec, stored)
        check: dict[str, float] = {"heldout_top1": round(heldout_top1(bb, pools), 4)}
        if probe:
            check["fss_probe_miou"] = round(fss_probe_miou(bb), 4)
            if isinstance(stored, ZooCLIP):
                check["fold_text_top1"] = round(fold_text_top1(bb), 4)
    entry = {
        "file": checkpoint_file(name),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "params": num_params(net),
        "backbone_params": num_params(bb._trunk[0]) + (num_params(net.attnpool) if isinstance(net, ZooCLIP) else 0),
        "arch": spec.arch,
        "model": spec.model,
        "pretraining": spec.pretraining,
        "upgrade": spec.upgrade,
        "config": dict(spec.config),
        "train": {
            "steps": spec.steps if steps is None else steps,
            "batch": spec.batch if batch is None else batch,
            "seed": spec.seed,
            "n_train": int(pools.train[0].shape[0]),
            "n_heldout": int(pools.heldout[0].shape[0]),
            "image_size": IMAGE_SIZE,
            "aux_seg": spec.aux_seg,
            "seconds": round(train_s, 1),
        },
        "check": check,
        "layers": [[s.name, s.channels, s.stride, s.stage] for s in bb.layers],
    }
    return data, entry


# Rough single-thread cost (seconds on the reference 2-core machine), to start the longest first.
_COST = {"zoo-rn-m": 190, "zoo-clip-rn": 190, "zoo-vit": 160, "zoo-rn-s": 100}

_WORKER_POOLS: Pools | None = None
_WORKER_QUEUE: Any = None


def _worker_init(pools: Pools, queue: Any) -> None:
    global _WORKER_POOLS, _WORKER_QUEUE
    _WORKER_POOLS, _WORKER_QUEUE = pools, queue
    torch.set_num_threads(THREADS)


def _worker_build(name: str, steps: int | None, probe: bool) -> tuple[bytes, dict[str, Any]]:
    assert _WORKER_POOLS is not None
    queue = _WORKER_QUEUE

    def report(what: str, done: int, total: int) -> None:
        if queue is not None and (done == total or done % 10 == 0):
            queue.put((what, done, total))

    return build_one(name, _WORKER_POOLS, steps=steps, progress=report, probe=probe)


def build_zoo(
    out: Path,
    only: list[str] | None = None,
    steps: int | None = None,
    n_train: int = N_TRAIN,
    n_heldout: int = N_HELDOUT,
    progress: Progress | None = None,
    probe: bool = True,
    jobs: int | None = None,
) -> dict[str, Any]:
    """Train ``only`` (default: the whole zoo) and write checkpoints + manifest into ``out``.

    ``jobs`` models train at once in forked worker processes (default: 2, or 1 on a 1-core
    machine); ``jobs=1`` trains in this process. The checkpoints do not depend on ``jobs``.
    """
    import os

    names = list(ZOO) if not only else list(dict.fromkeys(get_spec(n).name for n in only))
    jobs = min(JOBS, os.cpu_count() or 1) if jobs is None else max(1, jobs)
    jobs = min(jobs, len(names))
    t0 = time.perf_counter()
    if progress is not None:
        progress("render", 0, 1)
    with deterministic():
        pools = get_pools(n_train, n_heldout, workers=max(jobs, 1))
    render_s = time.perf_counter() - t0
    if progress is not None:
        progress("render", 1, 1)
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(out)
    manifest.setdefault("models", {})

    def store(data: bytes, entry: dict[str, Any]) -> None:
        tmp = out / (entry["file"] + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out / entry["file"])
        manifest["models"][entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
        write_manifest(out, manifest)

    if jobs <= 1 or not can_fork():
        for name in names:
            data, entry = build_one(name, pools, steps=steps, progress=progress, probe=probe)
            store(data, {"name": name, **entry})
    else:
        import multiprocessing as mp
        import queue as queue_mod
        from concurrent.futures import FIRST_COMPLETED, wait

        q = mp.get_context("fork").Queue()  # like DataLoader workers: single-threaded torch after fork
        order = sorted(names, key=lambda n: -_COST.get(n, 100))
        with ForkPool(jobs, _worker_init, (pools, q)) as pool:
            futures = {pool.submit(_worker_build, n, steps, probe): n for n in order}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while True:
                    try:
                        msg = q.get_nowait()
                    except queue_mod.Empty:
                        break
                    if progress is not None:
                        progress(*msg)
                for fut in done:
                    data, entry = fut.result()
                    store(data, {"name": futures[fut], **entry})
    manifest["format"] = 1
    manifest["torch"] = torch.__version__
    manifest["threads_per_model"] = THREADS
    manifest["last_build"] = {
        "models": names,
        "jobs": jobs,
        "render_seconds": round(render_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_manifest(out, manifest)
    return manifest
