"""``fssbench episodes``: freeze episode lists to files that drive evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fssbench.console import console

episodes_app = typer.Typer(help="Freeze and inspect episode lists.", no_args_is_help=True)


@episodes_app.command("export")
def export(
    dataset: str = typer.Option(..., "--dataset", "-d", help="pascal, coco or fss."),
    root: Path = typer.Option(..., "--root", "-r", help="Dataset root folder."),
    fold: int = typer.Option(0, "--fold", "-f", help="Fold whose novel classes are sampled."),
    shot: int = typer.Option(1, "--shot", "-k", help="Supports per episode (0 = zero-shot, text only)."),
    episodes: Optional[int] = typer.Option(
        None, "--episodes", "-n", help="Number of episodes (default: the protocol's count for the dataset)."
    ),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed that fixes the episodes."),
    out: Path = typer.Option(..., "--out", "-o", help="JSON file to write."),
    split: str = typer.Option("val", "--split", help="val (novel classes), baseval or trn (base classes)."),
    protocol: str = typer.Option("hsnet", "--protocol", "-p", help="hsnet or pfenet: sets the default count and filter."),
    min_fg_pixels: Optional[int] = typer.Option(
        None, "--min-fg-pixels", help="Drop queries/supports whose object is smaller (PFENet filter: 2048)."
    ),
    split_dir: Optional[Path] = typer.Option(None, "--split-dir", help="Folder with split lists, if not under ROOT/splits."),
) -> None:
    """Sample episodes with a fixed seed and write them, with a content hash, to a JSON file."""
    from fssbench.datasets import get_dataset
    from fssbench.episodes import sample_episodes
    from fssbench.paths import writable_file
    from fssbench.protocols import get_protocol

    writable_file(out, "episode file (--out)", example="episodes.json")  # before sampling: no work lost
    proto = get_protocol(protocol)
    ds = get_dataset(dataset, root, split_dir=split_dir)
    n = episodes if episodes is not None else proto.episodes_for(ds.name)
    min_px = proto.min_fg_pixels if min_fg_pixels is None else min_fg_pixels
    lst = sample_episodes(ds, fold, shot, n, seed, split=split, min_fg_pixels=min_px)
    lst.save(out)
    console.print(
        f"wrote {len(lst.episodes)} episodes ({ds.name} fold {fold}, {shot}-shot, seed {seed}, "
        f"{len(lst.class_names)} classes) to {out}  hash {lst.hash[:16]}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@episodes_app.command("show")
def show(file: Path = typer.Argument(..., help="An episode file written by `episodes export`.")) -> None:
    """Verify an episode file's hash and summarise it."""
    from collections import Counter

    from fssbench.episodes import EpisodeList

    lst = EpisodeList.load(file)
    counts = Counter(s.class_id for s in lst.episodes)
    plain = {"markup": False, "highlight": False, "soft_wrap": True}  # paths and class names are shown as they are
    console.print(f"{file}: {lst.dataset} fold {lst.fold} '{lst.split}' {lst.shot}-shot seed {lst.seed}, hash {lst.hash}", **plain)
    for cid, k in sorted(counts.items()):
        console.print(f"  class {cid:>3} {lst.class_names.get(cid, '?'):<28} {k} episodes", **plain)


def register(app: typer.Typer) -> None:
    app.add_typer(episodes_app, name="episodes")
