"""Trainable parameters per method and training backbone, read from each run's provenance.

A method whose decoder is backbone-agnostic (DiffUp) must show one count in every row of its
method; a method whose decoder is shaped by the backbone (HSNet's learner by the number of blocks
per stage) shows where it differs. The runner records the count it evaluated
(``provenance.trainable_parameters``).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from fssbench.results import RunResult


def parameter_counts(runs: Sequence[RunResult]) -> dict[str, dict[str, set[int]]]:
    """``{method label: {training backbone: {counts}}}`` over the evaluated runs."""
    out: dict[str, dict[str, set[int]]] = defaultdict(lambda: defaultdict(set))
    for r in runs:
        n = (r.provenance or {}).get("trainable_parameters")
        if n is None or r.status == "incompatible":
            continue
        c = r.config
        out[c.get("label") or c["method"]][c["train_backbone"]].add(int(n))
    return {m: dict(v) for m, v in out.items()}


def parameters_markdown(runs: Sequence[RunResult]) -> str:
    """One row per method: the count per training backbone and whether it is the same for all."""
    counts = parameter_counts(runs)
    if not counts:
        return ""
    backbones = sorted({b for per in counts.values() for b in per})
    lines = ["# Trainable parameters", "",
             "Parameters of each method's trained part, per training backbone (from the runs' provenance).", "",
             "| method | " + " | ".join(backbones) + " | same for every backbone |",
             "|---|" + "--:|" * len(backbones) + ":-:|"]
    for m in sorted(counts):
        per = counts[m]
        cells = [", ".join(f"{n:,}" for n in sorted(per[b])) if b in per else "–" for b in backbones]
        same = len({n for s in per.values() for n in s}) == 1
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {'yes' if same else 'no'} |")
    return "\n".join(lines) + "\n"
