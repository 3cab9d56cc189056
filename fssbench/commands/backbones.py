"""``fssbench backbones``: every registered backbone, its layers, and where its weights are."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fssbench.backbones.weights import ENV_VAR


def _fmt_stages(info) -> str:  # noqa: ANN001 - BackboneInfo
    stages = info.stage_layers
    return " ".join(f"{s.stride}:{s.channels}" for s in stages)


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
    from fssbench import console as _console
    from fssbench.backbones import list_backbones, resolve_weights_dir

    infos = list_backbones(kind)
    wdir = resolve_weights_dir(weights_dir)
    table = Table(title="backbones", title_justify="left", show_lines=False)
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("arch")
    table.add_column("pretraining", no_wrap=True)
    table.add_column("layers", justify="right", no_wrap=True)
    table.add_column("stages (stride:channels)")
    table.add_column("text", no_wrap=True)
    table.add_column("weights", overflow="fold")
    n_missing = 0
    for info in infos:
        layers = info.layer_specs()
        stages = info.stage_layers
        status = info.weights_status(wdir)
        if status is None:
            weights = "[green]built in[/]"
        elif status.found is not None:
            weights = f"[green]found[/] {status.found}"
        else:
            n_missing += 1
            weights = f"[yellow]missing[/] -> {status.expected_location}"
        text = f"yes ({info.text_dim})" if info.has_text and info.text_dim else ("yes" if info.has_text else "no")
        table.add_row(
            info.name,
            info.kind,
            f"{info.model} [dim]{info.arch}[/]" if info.model else info.arch,
            info.pretraining,
            f"{len(layers)} / {len(stages)}",
            _fmt_stages(info),
            text,
            weights,
        )
    out = _console.console
    out.print(table)
    where = str(wdir) if wdir is not None else f"${ENV_VAR} not set"
    out.print(
        f"layers = blocks / stages. weights directory: {where}; also searched: torch hub cache, "
        "~/.cache/clip, Hugging Face cache. Nothing is downloaded.",
        soft_wrap=True,
        highlight=False,
    )
    if n_missing:
        out.print(
            f"{n_missing} backbone(s) without weights: put the named file in the weights directory "
            "(or use weights='random' for tests).",
            soft_wrap=True,
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    app.command("backbones")(backbones)
