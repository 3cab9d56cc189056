"""``fssbench zoo``: build (pretrain) and list the embedded zoo of small backbones."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

zoo_app = typer.Typer(help="Build and list the embedded zoo of small pretrained backbones.", no_args_is_help=True)


@zoo_app.command("build")
def build(
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Folder for checkpoints + zoo.json (default: the zoo cache, $FSSBENCH_CACHE/zoo or ~/.cache/fssbench/zoo)."
    ),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Build only this model (repeatable)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Override the training steps (quick, non-reference builds)."),
    jobs: Optional[int] = typer.Option(
        None, "--jobs", "-j", help="Models trained at once, one thread each (default 2; the checkpoints do not depend on it)."
    ),
) -> None:
    """Pretrain the zoo deterministically on the synthetic pretraining classes and cache it."""
    import time

    from fssbench.backbones.zoo import ZOO, cache_dir, get_spec
    from fssbench.backbones.zoo.train import build_zoo
    from fssbench.console import console, progress

    from fssbench.paths import writable_dir

    names = [get_spec(n).name for n in only] if only else list(ZOO)
    folder = writable_dir(out if out is not None else cache_dir(), "zoo folder (--out)" if out is not None else "zoo cache folder")
    t0 = time.perf_counter()
    with progress() as prog:
        tasks: dict[str, int] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                label = "render pretraining images" if what == "render" else f"train {what}"
                tasks[what] = prog.add_task(label, total=total)
            prog.update(tasks[what], completed=done, total=total)

        manifest = build_zoo(folder, only=names, steps=steps, progress=report, jobs=jobs)
    for name in names:
        e = manifest["models"][name]
        figs = "  ".join(f"{k} {v:.3f}" for k, v in e["check"].items())
        console.print(f"{name:<12} {e['params']:>9,} params  {e['bytes'] / 1e6:5.2f} MB  {e['train']['seconds']:6.1f} s  {figs}  sha256 {e['sha256'][:12]}", highlight=False)
    console.print(f"built {len(names)} model(s) into {folder} in {time.perf_counter() - t0:.0f} s", markup=False, highlight=False)


@zoo_app.command("list")
def list_(
    out: Optional[Path] = typer.Option(None, "--dir", help="Also look in this folder (as `zoo build --out`)."),
) -> None:
    """Each zoo model: architecture, parameters, checkpoint size, pretraining, location, check figures."""
    from rich import box
    from rich.table import Table

    from fssbench.backbones.zoo import SHIPPED_DIR, ZOO, cache_dir, locate, read_manifest
    from rich.markup import escape

    from fssbench.console import console

    from fssbench.errors import UserError

    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--dir {out} is a file, not a folder; pass the folder `fssbench zoo build --out` wrote")
    manifests = {"cache": read_manifest(cache_dir()), "shipped": read_manifest(SHIPPED_DIR)}
    if out is not None:
        manifests["dir"] = read_manifest(out)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col, kw in (
        ("name", {"style": "bold", "no_wrap": True}),
        ("arch", {}),
        ("model", {}),
        ("params", {"justify": "right"}),
        ("ckpt", {"justify": "right"}),
        ("pretraining", {"no_wrap": True}),
        ("upgrade", {}),
        ("where", {"no_wrap": True}),
        ("check figures", {}),
    ):
        table.add_column(col, **kw)
    for name, spec in ZOO.items():
        found = locate(name, out) if out is not None else None
        found = found or locate(name)
        where = found[0] if found else "missing"
        entry = manifests.get(where, {}).get("models", {}).get(name) if found else None
        if entry is None:  # fall back on any manifest that knows the model
            entry = next((m["models"][name] for m in manifests.values() if name in m.get("models", {})), None)
        params = f"{entry['params']:,}" if entry else "?"
        size = f"{entry['bytes'] / 1e6:.2f} MB" if entry else "?"
        figs = ", ".join(f"{k} {v:.3f}" for k, v in entry["check"].items()) if entry else "-"
        colour = {"cache": "green", "shipped": "cyan", "dir": "green", "missing": "yellow"}[where]
        table.add_row(
            name, spec.arch, spec.model, params, size, spec.pretraining, spec.upgrade, f"[{colour}]{where}[/]", figs
        )
    console.print(table)
    console.print(
        f"cache: {escape(str(cache_dir()))}   shipped: {escape(str(SHIPPED_DIR))}\n"
        "check figures: heldout_top1 = held-out pretraining accuracy (CLIP: zero-shot over the 48 prompts); "
        "fss_probe_miou = training-free 1-shot prototype probe on the 20 novel fold classes (random weights: ~0.1); "
        "fold_text_top1 = zero-shot naming of novel objects by the text tower (chance 0.05). "
        "Missing models: run `fssbench zoo build`.",
        soft_wrap=True,
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
