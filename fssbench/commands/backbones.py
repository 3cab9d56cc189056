"""``fssbench backbones``: every registered backbone, its layers, and where its weights are."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from fssbench.backbones.weights import ENV_VAR


def backbones(
    weights_dir: Optional[Path] = typer.Option(
        None,
        "--weights-dir",
        help=f"Folder with weight files (default: ${ENV_VAR}; library caches are searched too).",
        show_default=False,
    ),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only this family (clip, imagenet, zoo, ...)."),
) -> None:
    """List backbones: architecture, pretraining, layers, stage strides:channels, text tower, weights."""
    from rich.markup import escape

    from fssbench import console as _console
    from fssbench.backbones import list_backbones, resolve_weights_dir
    from fssbench.errors import UserError

    infos = list_backbones(kind)
    wdir = resolve_weights_dir(weights_dir)
    if wdir is not None and wdir.exists() and not wdir.is_dir():
        source = "--weights-dir" if weights_dir is not None else f"${ENV_VAR}"
        raise UserError(f"weights folder {wdir} ({source}) is a file, not a folder; pass the folder that holds the weight files")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("arch", min_width=9)
    table.add_column("pretrain", no_wrap=True)
    table.add_column("layers", justify="right", no_wrap=True)
    table.add_column("stage strides", min_width=6)
    table.add_column("stage channels", min_width=9)
    table.add_column("text", no_wrap=True)
    locations: list[tuple[str, str]] = []
    n_missing = 0
    for info in infos:
        stages = info.stage_layers
        status = info.weights_status(wdir)
        if status is None:
            locations.append((info.name, "[green]built in[/]"))
        elif status.found is not None:
            locations.append((info.name, f"[green]found[/]    {escape(str(status.found))}"))
        else:
            n_missing += 1
            locations.append((info.name, f"[yellow]missing[/]  expected at {escape(status.expected_location)}"))
        text = (str(info.text_dim) if info.text_dim else "yes") if info.has_text else "no"
        table.add_row(
            info.name,
            info.kind,
            f"{info.model} {info.arch}" if info.model else info.arch,
            info.pretraining,
            f"{len(info.layer_specs())}/{len(stages)}",
            " ".join(str(s.stride) for s in stages),
            " ".join(str(s.channels) for s in stages),
            text,
        )
    out = _console.console
    out.print(table)
    out.print(
        "layers = blocks/stages; strides and channels of each stage's last block; text = text-embedding dim",
        soft_wrap=True,
        highlight=False,
    )
    width = max((len(n) for n, _ in locations), default=0)
    out.print("weights:", highlight=False)
    for name, line in locations:  # paths on their own lines: never folded inside a table cell
        out.print(f"  {escape(name):<{width}}  {line}", soft_wrap=True, highlight=False)
    where = escape(str(wdir)) if wdir is not None else f"${ENV_VAR} (not set)"
    out.print(
        f"weights directory: {where}; also searched: torch hub cache, ~/.cache/clip, Hugging Face cache "
        "(read only, nothing is downloaded).",
        soft_wrap=True,
        highlight=False,
    )
    if n_missing:
        out.print(
            f"{n_missing} backbone(s) without weights: put the named file there or pass --weights-dir DIR.",
            soft_wrap=True,
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("backbones")(backbones)
