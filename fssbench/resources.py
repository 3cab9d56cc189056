"""What one task asks of an executor (``resources:`` in a suite, or the command line).

A leaf module: the suite parses its ``resources`` mapping here once, when it loads, and holds the
typed result; the task graph (``fssbench.executors.graph``) applies the command line's overrides.
Resources are no part of any run's identity.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from fssbench.errors import UserError

RESOURCE_KEYS = ("cpus", "gpus", "mem_gb", "time_min", "partition", "account", "qos", "constraint")
"""What a task may ask for (``resources.train`` / ``resources.eval`` in a suite)."""

TASK_KINDS = ("train", "eval")


@dataclass(frozen=True)
class Resources:
    """What one task asks of an executor. ``gpus > 1`` on a training launches it under
    ``torchrun`` (DDP, ``fssbench.executors.task``)."""

    cpus: int = 1
    gpus: int = 0
    mem_gb: float | None = None
    time_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


DEFAULT_RESOURCES = {"train": Resources(cpus=1, time_min=24 * 60), "eval": Resources(cpus=1, time_min=4 * 60)}


def check_resources(doc: Any, where: str = "resources") -> list[str]:
    """Problems of a ``resources`` mapping (``{train: {...}, eval: {...}}``), one line each."""
    if doc is None:
        return []
    if not isinstance(doc, dict):
        return [f"'{where}' must be a mapping with keys train and/or eval"]
    problems = []
    for kind, spec in doc.items():
        if kind not in TASK_KINDS:
            problems.append(f"unknown key '{where}.{kind}' (valid: {', '.join(TASK_KINDS)})")
            continue
        if not isinstance(spec, dict):
            problems.append(f"'{where}.{kind}' must be a mapping such as {{gpus: 1, cpus: 8, time_min: 120}}")
            continue
        for k, v in spec.items():
            if k not in RESOURCE_KEYS:
                problems.append(f"unknown key '{where}.{kind}.{k}' (valid: {', '.join(RESOURCE_KEYS)})")
            elif k in ("cpus", "gpus", "time_min") and (isinstance(v, bool) or not isinstance(v, int) or v < (1 if k != "gpus" else 0)):
                problems.append(f"'{where}.{kind}.{k}' must be a whole number >= {1 if k != 'gpus' else 0}, got {v!r}")
            elif k == "mem_gb" and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
                problems.append(f"'{where}.{kind}.mem_gb' must be a positive number, got {v!r}")
            elif k in ("partition", "account", "qos", "constraint") and not isinstance(v, str):
                problems.append(f"'{where}.{kind}.{k}' must be a string, got {v!r}")
    return problems


def parse_resources(doc: Any, problems: list[str]) -> dict[str, Resources]:
    """A suite's ``resources`` mapping as typed resources per task kind (defaults filled in); its
    problems are added to ``problems`` (and the defaults returned)."""
    found = check_resources(doc)
    problems.extend(found)
    if found or not doc:
        return dict(DEFAULT_RESOURCES)
    return {k: replace(DEFAULT_RESOURCES[k], **(doc.get(k) or {})) for k in TASK_KINDS}


def resources_for(kind: str, suite_resources: Mapping[str, Resources] | None, overrides: Mapping[str, Any] | None = None) -> Resources:
    """The resources of a ``kind`` task: the suite's (defaults where it has none) < ``overrides``
    (the command line's, which apply to every task kind)."""
    base = (suite_resources or {}).get(kind, DEFAULT_RESOURCES[kind])
    spec = {k: v for k, v in (overrides or {}).items() if v is not None}
    bad = sorted(set(spec) - set(RESOURCE_KEYS))
    if bad:
        raise UserError(f"unknown resource(s) {', '.join(bad)}; valid: {', '.join(RESOURCE_KEYS)}")
    return replace(base, **spec)


__all__ = ["DEFAULT_RESOURCES", "RESOURCE_KEYS", "Resources", "TASK_KINDS", "check_resources", "parse_resources", "resources_for"]
