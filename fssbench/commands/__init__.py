"""CLI command modules. Each exposes ``register(app: typer.Typer) -> None``."""

from __future__ import annotations

import importlib

import typer

# Order is the order of ``fssbench --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "synth",
    "data",
    "episodes",
    "backbones",
    "zoo",
    "run",
    "report",
)


def register_all(app: typer.Typer) -> None:
    for mod in COMMAND_MODULES:
        importlib.import_module(f"fssbench.commands.{mod}").register(app)
