"""Writing the synthetic world to disk in the PASCAL-5i layout that HSNet reads.

::

    DIR/VOC2012/JPEGImages/<name>.jpg            RGB JPEG, quality 95, 4:4:4
    DIR/VOC2012/SegmentationClassAug/<name>.png  palette PNG (VOC colours): 0 bg, 1..20 class, 255 band
    DIR/splits/pascal/{trn,val}/fold{0..3}.txt   "<name>__<CC>" per (image, fold-K class it contains)
    DIR/classes.txt                              "<id> <name>", 20 lines
    DIR/synth.json                               provenance (written last: marks a finished world)

Every data file is a pure function of ``(seed, preset)``: same seed, same bytes, whatever the
number of worker processes. ``synth.json`` adds the generation time and a SHA-256 over all data
files (``data_sha256``), which is itself identical for identical seeds.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from fssbench.errors import UserError
from fssbench.synth.classes import (
    CLASSES_PER_FOLD,
    N_FOLDS,
    fold_class_ids,
    fold_classes,
    pretrain_classes,
)
from fssbench.synth.render import MAX_SIDE, MIN_SIDE, render_fss_image

GENERATOR = "fssbench.synth"
GENERATOR_VERSION = "1.0"
JPEG_QUALITY = 95
MARKER = ".synth-incomplete"
PREFIX = {"trn": "syn_trn_", "val": "syn_val_"}


@dataclass(frozen=True)
class Preset:
    name: str
    n_trn: int
    n_val: int


PRESETS: dict[str, Preset] = {
    # small: 100 val images so that every fold's baseval (val images without a novel class) keeps
    # >= 3 images of every base class (2-shot model selection); 60 left fold 0 with one of class 10
    "small": Preset("small", n_trn=160, n_val=100),
    "default": Preset("default", n_trn=2000, n_val=500),
}


def voc_palette() -> list[int]:
    """The standard PASCAL VOC colour map (256 RGB triples, flattened; 255 is cream-white)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


_PALETTE = voc_palette()


def image_name(split: str, index: int) -> str:
    return f"{PREFIX[split]}{index:06d}"


def encode_jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, "RGB").save(
        buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False, progressive=False
    )
    return buf.getvalue()


def encode_label_png(label: np.ndarray) -> bytes:
    im = Image.fromarray(label)  # mode "L"
    im.putpalette(_PALETTE)  # -> mode "P", indices unchanged
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _work(args: tuple[str, int, str, int]) -> tuple[str, list[int], str, str, int, int, list[int]]:
    """Render and write one image; returns its name, classes, file hashes, size and pixel counts."""
    out, seed, split, index = args
    root = Path(out) / "VOC2012"
    s = render_fss_image(seed, split, index)
    name = image_name(split, index)
    jpg, png = encode_jpeg(s.image), encode_label_png(s.label)
    (root / "JPEGImages" / f"{name}.jpg").write_bytes(jpg)
    (root / "SegmentationClassAug" / f"{name}.png").write_bytes(png)
    counts = np.bincount(s.label.ravel(), minlength=256)
    return (
        name,
        s.classes,
        hashlib.sha256(jpg).hexdigest(),
        hashlib.sha256(png).hexdigest(),
        int(s.label.shape[0]),
        int(s.label.shape[1]),
        [int(counts[c]) for c in s.classes],
    )


def _is_synth_dir(path: Path) -> bool:
    if (path / MARKER).exists():
        return True
    meta = path / "synth.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("generator") == GENERATOR
    except (OSError, ValueError):
        return False


_OWNED = ("VOC2012", "splits", "classes.txt", "synth.json", MARKER)


def prepare_out_dir(out: Path, force: bool) -> None:
    """Make ``out`` ready: new/empty, a previous synth world (replaced), or ``force``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder (new or empty) for the synthetic dataset")
    if out.is_dir() and any(out.iterdir()):
        if not (_is_synth_dir(out) or force):
            raise UserError(
                f"--out {out} is not empty and holds no synthetic dataset; choose a new or empty folder, "
                f"or pass --force to replace its VOC2012/, splits/, classes.txt and synth.json"
            )
        for item in _OWNED:
            p = out / item
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
    try:
        (out / "VOC2012" / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (out / "VOC2012" / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
        for split in ("trn", "val"):
            (out / "splits" / "pascal" / split).mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("fssbench synth is writing here; delete this folder if it was interrupted\n")
    except OSError as exc:
        raise UserError(f"cannot write to --out {out} ({exc.strerror or exc}); choose a writable folder") from None


def _run_jobs(
    jobs: list[tuple[str, int, str, int]], workers: int, on_done: Callable[[], None]
) -> Iterator[tuple[str, list[int], str, str, int, int, list[int]]]:
    if workers <= 1:
        for j in jobs:
            yield _work(j)
            on_done()
        return
    # fork where the platform has it: workers start instantly and need no importable __main__
    # (the workers only use numpy/scipy/Pillow, never torch, so a parent that imported torch is
    # fine, as for torch's own DataLoader workers). Elsewhere, spawn.
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for res in pool.imap(_work, jobs, chunksize=16):
            yield res
            on_done()


def default_workers(n_images: int) -> int:
    if n_images < 400:  # starting processes costs more than it saves
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def generate(
    out: str | Path,
    *,
    seed: int = 0,
    size: str = "default",
    force: bool = False,
    workers: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write the synthetic PASCAL-5i world for ``seed`` and ``size`` to ``out``; returns the provenance."""
    if size not in PRESETS:
        raise UserError(f"unknown --size '{size}'; choose one of: {', '.join(PRESETS)}")
    if seed < 0:
        raise UserError(f"--seed must be >= 0, got {seed}")
    preset = PRESETS[size]
    out = Path(out)
    prepare_out_dir(out, force)
    t0 = time.perf_counter()
    jobs = [(str(out), seed, split, i) for split, n in (("trn", preset.n_trn), ("val", preset.n_val)) for i in range(n)]
    n_workers = default_workers(len(jobs)) if workers is None else max(1, int(workers))

    results: dict[str, list[tuple[str, list[int], str, str, int, int, list[int]]]] = {"trn": [], "val": []}
    if show_progress:
        from fssbench.console import progress

        with progress() as prog:
            task = prog.add_task(f"synth {size} seed {seed}", total=len(jobs))
            for res in _run_jobs(jobs, n_workers, lambda: prog.advance(task)):
                results["trn" if res[0].startswith(PREFIX["trn"]) else "val"].append(res)
    else:
        for res in _run_jobs(jobs, n_workers, lambda: None):
            results["trn" if res[0].startswith(PREFIX["trn"]) else "val"].append(res)

    file_hashes: dict[str, str] = {}
    for split, rows in results.items():
        rows.sort(key=lambda r: r[0])
        for name, _, h_jpg, h_png, *_ in rows:
            file_hashes[f"VOC2012/JPEGImages/{name}.jpg"] = h_jpg
            file_hashes[f"VOC2012/SegmentationClassAug/{name}.png"] = h_png

    def write_text(rel: str, text: str) -> None:
        (out / rel).write_text(text, encoding="utf-8", newline="\n")
        file_hashes[rel] = hashlib.sha256(text.encode("utf-8")).hexdigest()

    classes = fold_classes()
    stats: dict[str, Any] = {}
    for split, rows in results.items():
        entries_per_fold = []
        for fold in range(N_FOLDS):
            ids = set(fold_class_ids(fold))
            lines = [f"{name}__{c:02d}" for name, cls, *_ in rows for c in cls if c in ids]
            write_text(f"splits/pascal/{split}/fold{fold}.txt", "".join(line + "\n" for line in lines))
            entries_per_fold.append(len(lines))
        per_class = {c.id: 0 for c in classes}
        px_per_class = {c.id: 0 for c in classes}
        for _, cls, _, _, _, _, px in rows:
            for c, n in zip(cls, px):
                per_class[c] += 1
                px_per_class[c] += n
        hs = [r[4] for r in rows]
        ws = [r[5] for r in rows]
        stats[split] = {
            "images": len(rows),
            "entries_per_fold": entries_per_fold,
            "images_per_class": {str(k): v for k, v in per_class.items()},
            "mean_fg_pixels_per_class": {
                str(k): round(px_per_class[k] / max(1, per_class[k]), 1) for k in per_class
            },
            "height_range": [min(hs), max(hs)] if hs else None,
            "width_range": [min(ws), max(ws)] if ws else None,
            "pixels": int(sum(h * w for h, w in zip(hs, ws))),
        }
    write_text("classes.txt", "".join(f"{c.id} {c.name}\n" for c in classes))

    digest = hashlib.sha256()
    for rel in sorted(file_hashes):
        digest.update(f"{rel} {file_hashes[rel]}\n".encode())
    elapsed = time.perf_counter() - t0
    from fssbench import __version__ as fss_version

    meta: dict[str, Any] = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "fssbench_version": fss_version,
        "seed": seed,
        "size": size,
        "layout": "pascal-5i (HSNet)",
        "n_folds": N_FOLDS,
        "classes_per_fold": CLASSES_PER_FOLD,
        "folds": {str(k): fold_class_ids(k) for k in range(N_FOLDS)},
        "classes": [c.to_dict() for c in classes],
        "n_pretrain_classes": len(pretrain_classes()),
        "image_side_range": [MIN_SIDE, MAX_SIDE],
        "ignore_index": 255,
        "jpeg_quality": JPEG_QUALITY,
        "counts": stats,
        "data_sha256": digest.hexdigest(),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 2),
        "workers": n_workers,
    }
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (out / MARKER).unlink()
    return meta


def read_meta(root: str | Path) -> dict[str, Any] | None:
    """``synth.json`` of a synthetic world, or ``None`` when ``root`` is not one."""
    p = Path(root) / "synth.json"
    if not p.is_file():
        return None
    try:
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if meta.get("generator") == GENERATOR else None


def iter_split(seed: int, split: str, n: int) -> Iterable[Any]:
    """Render images ``0..n-1`` of ``split`` in memory (no files), e.g. for analyses and tests."""
    for i in range(n):
        yield render_fss_image(seed, split, i)
