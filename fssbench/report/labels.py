"""Labels: how methods, options, backbones and folds read in tables, and how rows that would read
alike are told apart."""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Mapping, Sequence

from fssbench.errors import UserError


def options_json(options: Any) -> str:
    """Canonical JSON of a run's ``method_options`` ("{}" when none)."""
    return json.dumps(options or {}, sort_keys=True, separators=(",", ":"), default=str)


def options_dict(options: Any) -> dict[str, Any]:
    """Method options as a mapping, whether stored as one or as (canonical) JSON text."""
    if isinstance(options, str):
        return json.loads(options) if options else {}
    return dict(options or {})


def value_text(v: Any) -> str:
    """``diffss``, ``2``, ``None`` or compact JSON for containers."""
    return str(v) if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, sort_keys=True, default=str)


def options_label(options: Any) -> str:
    """``aug=diffss, k=2`` from ``{"k": 2, "aug": "diffss"}`` ("" when none)."""
    options = options_dict(options)
    return ", ".join(f"{k}={value_text(options[k])}" for k in sorted(options))


@functools.lru_cache(maxsize=None)
def _method_defaults(method: str) -> tuple[tuple[str, str], ...]:
    """The registered method's default options (canonical JSON values); empty when not installed."""
    from fssbench.methods import get_method_class

    try:
        defaults = get_method_class(method).default_config
    except UserError:
        return ()
    return tuple((k, json.dumps(v, sort_keys=True, default=str)) for k, v in defaults.items())


def method_label(method: str, options: Any) -> str:
    """``hsnet (fg_weight=6.0)``: the method and the options that differ from its defaults.

    Results keep every resolved option (the cell identity); labels leave the defaults out so tables
    stay readable. Methods that are not installed show all their options."""
    defaults = dict(_method_defaults(str(method)))
    shown = {k: v for k, v in options_dict(options).items() if defaults.get(k) != json.dumps(v, sort_keys=True, default=str)}
    lab = options_label(shown)
    return f"{method} ({lab})" if lab else str(method)


def aux_label(aux: Any) -> str:
    """`` + aux 4×mask (offline)`` for a run config's ``aux`` ("" without auxiliary supports)."""
    if not isinstance(aux, Mapping) or not aux:
        return ""
    return f" + aux {aux.get('aux_shots')}×{aux.get('condition')} ({aux.get('backend')})"


def backbone_label(train: str, eval_: str, arrow: str = "→") -> str:
    return str(train) if train == eval_ or not eval_ else f"{train}{arrow}{eval_}"


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-") or "x"


def fold_name(fold: Any) -> str:
    return "mean" if fold == "mean" else f"fold{fold}"


def flat_items(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"protocol_settings.size": 400, ...}``: nested mappings as dotted keys."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flat_items(v, name))
        else:
            out[name] = v
    return out


def disambiguate(
    labels: Sequence[str], identities: Sequence[Mapping[str, Any]], groups: Sequence[Any] | None = None
) -> list[str]:
    """Labels made unique where identities differ: rows with the same label (and the same
    ``groups`` entry, e.g. the backbone and kind columns beside the label) get the ``key=value``
    pairs (dotted for nested settings) in which their identities differ, e.g.
    ``hsnet [episodes=300]`` and ``hsnet [episodes=1000]``. Equal identities keep equal labels."""
    out = list(labels)
    flat = [flat_items(i) for i in identities]
    by: dict[Any, list[int]] = {}
    for i, lab in enumerate(labels):
        by.setdefault((lab, None if groups is None else groups[i]), []).append(i)
    for (lab, _), idx in by.items():
        if len(idx) < 2:
            continue
        keys = sorted({k for i in idx for k in flat[i]})
        differ = [k for k in keys
                  if len({json.dumps(flat[i][k], sort_keys=True, default=str) if k in flat[i] else "" for i in idx}) > 1]
        for i in idx:
            if differ:
                out[i] = f"{lab} [" + ", ".join(f"{k}={value_text(flat[i].get(k, '–'))}" for k in differ) + "]"
    return out
