"""``fssbench synth``: write the embedded synthetic few-shot world as a PASCAL-5i dataset."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer


class SizePreset(str, Enum):
    small = "small"
    default = "default"


def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (new, empty, or a previous synth world)."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed; the same seed gives byte-identical files."),
    size: SizePreset = typer.Option(
        SizePreset.default, "--size", help="default: 2000 train + 500 val images (under a minute); small: 160 + 100 (tests)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Write into a non-empty folder that is not a synth world (replaces its VOC2012/ and splits/)."
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", "-j", help="Processes (default: 2 for the default preset, 1 for small). Output does not depend on it."
    ),
) -> None:
    """Generate the synthetic few-shot segmentation world in the PASCAL-5i layout HSNet reads.

    20 classes, each a shape x colour x texture combination (e.g. "red striped circle"), in 4 folds of 5 (fold K = class ids 5K+1..5K+5), with look-alike distractors, clutter, occlusion, textured backgrounds and a 255 boundary band.

    Writes VOC2012/JPEGImages, VOC2012/SegmentationClassAug, splits/pascal/{trn,val}/fold*.txt, classes.txt and synth.json (provenance) under OUT. Use OUT as the root of the pascal dataset.
    """
    from fssbench.errors import UserError

    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    from fssbench.console import console
    from fssbench.synth.world import generate

    meta = generate(out, seed=seed, size=size.value, force=force, workers=workers)
    c = meta["counts"]
    console.print(
        f"wrote synthetic PASCAL-5i world (seed {seed}, {size.value}): {c['trn']['images']} train + "
        f"{c['val']['images']} val images, 4 folds x 5 classes, in {meta['elapsed_s']:.1f} s to {out}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
