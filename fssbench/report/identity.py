"""What makes two runs the same cell, defined once for the report and the regression gate.

A cell averages only runs whose configuration is identical except for the seeds and a declared
set of presentation/bookkeeping keys (:data:`NON_IDENTITY_KEYS`). Every other key, including any
key a later fssbench adds to the run config, is part of the identity by default: dataset root,
protocol and its settings, episode count, method options (evaluation options too), supports,
checkpoint, profile, dataset options. So a table cell never silently averages runs that differ.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

NON_IDENTITY_KEYS = frozenset({"seeds", "seed", "label", "method_rank", "decoder_id", "suite_file"})
"""Config keys that never separate cells: the seeds (a cell averages over them), presentation
(row label, row order) and bookkeeping (the decoder id is derived from identity keys, the suite
file is where the run was declared)."""

READABLE_KEYS: tuple[str, ...] = ("dataset", "protocol", "method", "options", "train_backbone", "eval_backbone", "kind",
                                  "shot", "fold")
"""Identity keys stored as their own fields (of cells frames and baseline cells); the rest of the
identity goes to ``config``. ``options`` is the config's ``method_options``."""

POSITION_KEYS = ("shot", "fold")
"""Where a cell sits in a table row."""

FOLD_VARYING_KEYS = ("checkpoint",)
"""Identity keys that may legitimately differ between the folds of one row (released decoders come
one file per fold); rows are split by them only where two cells would otherwise collide."""

METHOD_KEYS = ("method", "method_options", "checkpoint")
"""What may differ between the two runs of a paired comparison (everything else must match)."""

OWN_SUPPORTS = "own"
OTHER_CLASS = "other-class"
"""``config["supports"]``: each episode's own supports, or the support-reliance control (supports
of another class of the same fold; same queries, same episode ids)."""


def _plain(obj: Any) -> Any:
    """JSON-normal form (tuples to lists, non-JSON values to strings) so equal configs compare equal."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def identity_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """The run config minus :data:`NON_IDENTITY_KEYS`, with the defaults of older run files
    filled in (no ``eval_backbone``: the train backbone; no ``kind``: mask; no ``supports``: own)."""
    ident = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    train = str(config.get("train_backbone", ""))
    ident["train_backbone"] = train
    ident["eval_backbone"] = str(config.get("eval_backbone") or train)
    ident["kind"] = str(config.get("kind") or "mask")
    ident["method_options"] = dict(config.get("method_options") or {})
    ident["supports"] = str(config.get("supports") or OWN_SUPPORTS)
    for k in ("dataset", "protocol", "method"):
        ident[k] = str(config.get(k, ""))
    for k in POSITION_KEYS:
        if k in config:
            ident[k] = int(config[k])
    return _plain(ident)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def cell_identity(config: Mapping[str, Any]) -> str:
    """Canonical JSON of :func:`identity_dict`: equal strings iff the runs belong to one cell."""
    return canonical(identity_dict(config))


def short_id(text: str) -> str:
    """A 12-hex-digit name for an identity string (row ids in CSV files)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def split_identity(ident: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(readable fields, the rest) of an identity dict; ``options`` stands for ``method_options``."""
    readable = {k: ident.get("method_options" if k == "options" else k) for k in READABLE_KEYS if
                ("method_options" if k == "options" else k) in ident}
    rest = {k: v for k, v in ident.items() if k not in READABLE_KEYS and k != "method_options"}
    return readable, rest


def join_identity(readable: Mapping[str, Any], rest: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_identity`."""
    ident = {("method_options" if k == "options" else k): v for k, v in readable.items()}
    ident.update(rest)
    return ident


def merge_over_folds(by_fold: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """One identity for a fold mean: a key equal in every fold keeps its value; a key that varies
    (e.g. a released checkpoint per fold) becomes ``{"by_fold": {"0": v0, "1": v1, ...}}``."""
    folds = sorted(by_fold)
    keys = sorted({k for f in folds for k in by_fold[f]})
    out: dict[str, Any] = {}
    for k in keys:
        vals = {str(f): by_fold[f].get(k) for f in folds}
        if len({canonical(v) for v in vals.values()}) == 1:
            out[k] = next(iter(vals.values()))
        else:
            out[k] = {"by_fold": vals}
    return out


def run_seeds(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"episodes", "train", "sampling"}``; an older file's single ``seed`` stands for all three."""
    seeds = config.get("seeds")
    if isinstance(seeds, Mapping):
        return {k: seeds.get(k) for k in ("episodes", "train", "sampling")}
    s = config.get("seed")
    return {"episodes": s, "train": s, "sampling": s}


def seeds_label(seeds: Mapping[str, Any]) -> str:
    """``0`` when the three seeds agree, else ``e0 t1 s2`` (episodes, train, sampling)."""
    vals = [seeds.get(k) for k in ("episodes", "train", "sampling")]
    if len({str(v) for v in vals}) == 1:
        return str(vals[0])
    return " ".join(f"{p}{v}" for p, v in zip("ets", vals))


def is_control(config: Mapping[str, Any]) -> bool:
    """A support-reliance control run (supports of another class)."""
    return str(config.get("supports") or OWN_SUPPORTS) == OTHER_CLASS
