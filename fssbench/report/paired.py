"""Paired comparisons on identical episodes, and the support-reliance control.

Both pair runs that scored the same episodes (same episode ids, same query images) and use
:func:`fssbench.metrics.paired_delta`: one cluster draw of query images for both runs (interval),
sign flips per query cluster (p-value, ``scipy.stats.permutation_test``).
"""

from __future__ import annotations

import math
from typing import Any, Collection, Sequence

import pandas as pd

from fssbench.errors import UserError
from fssbench.metrics import Pair, holm, paired_delta
from fssbench.report.cells import Row, RunStats, assign_rows
from fssbench.report.identity import METHOD_KEYS, OWN_SUPPORTS, canonical, is_control
from fssbench.report.labels import fold_name
from fssbench.results import RunResult


def resolve_reference(
    labels: Sequence[str], methods: Sequence[str], reference: str | None, usable: Collection[str] | None = None
) -> str:
    """The reference row label: ``reference`` matched as a label, then as a method name; else the
    first label. ``usable``: labels that have something to be compared with; among several
    matches (or for the default) the first usable one wins."""
    def first(cands: Sequence[str]) -> str:
        return next((c for c in cands if usable is None or c in usable), cands[0])

    if reference is None:
        return first(labels)
    if reference in labels:
        return reference
    hits = [lab for lab, m in zip(labels, methods) if m == reference]
    if hits:
        return first(hits)
    raise UserError(f"reference '{reference}' is not a method of these results; choose one of: {', '.join(dict.fromkeys(labels))}")


PAIRED_COLUMNS = ["dataset", "protocol", "method", "reference", "backbone", "kind", "shot", "fold", "seed", "episode_hash",
                  "n", "n_queries", "delta_miou", "ci_lo", "ci_hi", "p_value", "p_holm", "significant"]


def _pair(a: RunStats, b: RunStats, **kw: Any) -> Any:
    """``paired_delta`` of two runs (b minus a), or None when their records do not pair."""
    if not (a.records and b.records) or a.class_ids != b.class_ids:
        return None
    try:
        return paired_delta([Pair(a.records, b.records, a.class_ids, tag=a.run.episode_hash)], **kw)
    except ValueError:  # same hash but records disagree (e.g. a partial run): not pairable
        return None


def paired_comparisons(
    runs: Sequence[RunResult], reference: str | None = None, n_boot: int = 1000, seed: int = 0, n_perm: int = 10000
) -> pd.DataFrame:
    """Δ mIoU of every row against the reference row on identical episodes (same configuration
    apart from the method, same seeds and episode hash), with the paired cluster-bootstrap
    interval and Holm-adjusted p-values (per dataset and protocol). Support-reliance control runs
    are left out (see :func:`support_reliance`)."""
    stats = [RunStats(r) for r in runs if not is_control(r.config)]
    if not stats:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    rows, row_of = assign_rows(stats)
    ordered = list(rows.values())
    if reference is not None:
        resolve_reference([r.label for r in ordered], [r.method for r in ordered], reference)  # unknown -> UserError
    out = []
    tables: dict[tuple, list[tuple[RunStats, Row]]] = {}
    for s, row in zip(stats, row_of):
        if s.records:
            tables.setdefault(row.table, []).append((s, row))
    for (ds, proto), members in tables.items():
        with_records = {row.key for _, row in members}
        table_rows = [r for r in ordered if r.table == (ds, proto) and r.key in with_records]
        by_label = {r.label: r.method for r in table_rows}  # display order, first row of a label
        labels, methods = list(by_label), list(by_label.values())
        units: dict[tuple, dict[str, tuple[RunStats, Row]]] = {}
        for s, row in members:
            context = canonical({k: v for k, v in s.ident.items() if k not in METHOD_KEYS})
            u = (s.keys["shot"], s.keys["fold"], s.keys["seed"], context, s.run.episode_hash)
            units.setdefault(u, {}).setdefault(row.label, (s, row))
        usable = {lab for here in units.values() if len(here) > 1 for lab in here}
        try:
            ref = resolve_reference(labels, methods, reference, usable)
        except UserError:
            continue
        rows_out = []
        for u in sorted(units, key=lambda x: (x[0], x[1], str(x[2]), x[3], x[4])):
            here = units[u]
            if ref not in here:
                continue
            a, a_row = here[ref]
            for lab in labels:
                if lab == ref or lab not in here:
                    continue
                res = _pair(a, here[lab][0], n_boot=n_boot, n_perm=n_perm, seed=seed)
                if res is None:
                    continue
                k = a.keys
                rows_out.append({
                    "dataset": ds, "protocol": proto, "method": lab, "reference": ref, "backbone": a_row.backbone,
                    "kind": k["kind"], "shot": k["shot"], "fold": k["fold"], "seed": k["seed"],
                    "episode_hash": a.run.episode_hash, "n": res.n, "n_queries": res.n_clusters,
                    "delta_miou": res.delta, "ci_lo": res.ci_low, "ci_hi": res.ci_high, "p_value": res.p_value,
                })
        if rows_out:
            adj = holm([x["p_value"] for x in rows_out])
            for x, p in zip(rows_out, adj):
                x["p_holm"] = float(p)
                x["significant"] = bool(p < 0.05)
            out += rows_out
    return pd.DataFrame(out, columns=PAIRED_COLUMNS)


def paired_markdown(df: pd.DataFrame) -> str:
    lines = []
    for (ds, proto), sub in df.groupby(["dataset", "protocol"], sort=False):
        ref = sub["reference"].iloc[0]
        lines += [f"### {ds} ({proto} protocol): Δ mIoU vs {ref}", "",
                  "| Method | Backbone | Kind | Shot | Fold | Seed | n | Queries | Δ mIoU | 95% CI | p | p (Holm) |",
                  "|:--|:--|:--|--:|--:|--:|--:|--:|--:|:--|--:|--:|"]
        for x in sub.to_dict("records"):
            sig = " *" if x["significant"] else ""
            lines.append(
                f"| {x['method']} | {x['backbone']} | {x['kind']} | {x['shot']} | {x['fold']} | {x['seed']} | {x['n']} | "
                f"{x['n_queries']} | {x['delta_miou']:+.2f}{sig} | [{x['ci_lo']:+.2f}, {x['ci_hi']:+.2f}] | "
                f"{_p(x['p_value'])} | {_p(x['p_holm'])} |"
            )
        lines += ["", "Paired on identical episodes (same configuration apart from the method, same seeds and episode "
                  "hash). Δ = method − reference, in mIoU points; n = episodes, Queries = query-image clusters "
                  "(within class). CI: paired cluster bootstrap (one draw of query images for both runs); p: sign "
                  "flips per query cluster; p-values Holm-adjusted over all comparisons of this table "
                  "(* = p_Holm < 0.05).", ""]
    return "\n".join(lines)


def _p(p: float) -> str:
    return "–" if p is None or (isinstance(p, float) and math.isnan(p)) else ("<0.001" if p < 1e-3 else f"{p:.3f}")


# --------------------------------------------------------------------------------------------
# support reliance


RELIANCE_COLUMNS = ["dataset", "protocol", "method", "backbone", "kind", "shot", "fold", "n_runs", "n", "n_queries",
                    "miou_own", "miou_other", "delta_miou", "ci_lo", "ci_hi", "p_value", "uses_support", "verdict"]
NOT_USED = "does not use its support"


def support_reliance(runs: Sequence[RunResult], n_boot: int = 1000, seed: int = 0, n_perm: int = 10000) -> tuple[pd.DataFrame, list[str]]:
    """Per cell, mIoU with its own supports and with other-class supports (the control), and the
    paired Δ = own − other with its interval and p-value; the fold mean too where a row has
    several folds. A Δ interval that includes 0 is flagged ``does not use its support``.

    Returns the frame and the run ids of controls without an own-support partner (same
    configuration apart from ``supports``, same seeds, records on the same episode ids)."""
    controls = [RunStats(r) for r in runs if is_control(r.config)]
    if not controls:
        return pd.DataFrame(columns=RELIANCE_COLUMNS), []
    own = [RunStats(r) for r in runs if not is_control(r.config)]
    rows, row_of = assign_rows(own)
    by_cell: dict[tuple, RunStats] = {}
    for s in own:
        by_cell[(s.cell, s.keys["seed"])] = s
    row_by_id = {id(s): row for s, row in zip(own, row_of)}
    pairs: dict[str, list[tuple[RunStats, RunStats]]] = {}  # row key -> (own, control)
    unmatched = []
    for c in controls:
        twin = by_cell.get((canonical({**c.ident, "supports": OWN_SUPPORTS}), c.keys["seed"]))
        if twin is None or not (twin.records and c.records) or twin.class_ids != c.class_ids:
            unmatched.append(c.run.run_id)
            continue
        pairs.setdefault(row_by_id[id(twin)].key, []).append((twin, c))
    out = []
    kw = {"n_boot": n_boot, "n_perm": n_perm, "seed": seed}
    for key in rows:
        if key not in pairs:
            continue
        row = rows[key]
        by_pos: dict[int, dict[int, list[tuple[RunStats, RunStats]]]] = {}
        for o, c in pairs[key]:
            by_pos.setdefault(o.keys["shot"], {}).setdefault(o.keys["fold"], []).append((o, c))
        for shot in sorted(by_pos):
            folds = by_pos[shot]
            groups: list[tuple[Any, dict[int, list[tuple[RunStats, RunStats]]]]] = [(f, {f: folds[f]}) for f in sorted(folds)]
            if len(folds) > 1:
                groups.append(("mean", folds))
            for fold, members in groups:
                pl = [Pair(c.records, o.records, o.class_ids, 1.0 / (len(members) * len(v)), f, o.run.episode_hash)
                      for f, v in members.items() for o, c in v]
                try:
                    res = paired_delta(pl, **kw)
                except ValueError:
                    unmatched += [c.run.run_id for v in members.values() for _, c in v]
                    continue
                uses = not (res.ci_low <= 0.0 <= res.ci_high)
                out.append({
                    "dataset": row.table[0], "protocol": row.table[1], "method": row.label, "backbone": row.backbone,
                    "kind": row.kind, "shot": shot, "fold": fold, "n_runs": len(pl), "n": res.n, "n_queries": res.n_clusters,
                    "miou_own": res.value_b, "miou_other": res.value_a, "delta_miou": res.delta, "ci_lo": res.ci_low,
                    "ci_hi": res.ci_high, "p_value": res.p_value, "uses_support": uses,
                    "verdict": "uses its support" if uses else NOT_USED,
                })
    return pd.DataFrame(out, columns=RELIANCE_COLUMNS), sorted(set(unmatched))


def reliance_markdown(df: pd.DataFrame, unmatched: Sequence[str] = ()) -> str:
    lines = ["## Support reliance", "",
             "Each control run scores the same queries (same episode ids) with the supports replaced by supports of "
             "another class of the same fold. Δ = mIoU with its own supports − mIoU with other-class supports, paired "
             "on the episodes (cluster bootstrap of query images; sign flips per query cluster). A method whose Δ "
             f"interval includes 0 is flagged: it {NOT_USED}.", ""]
    for (ds, proto), sub in df.groupby(["dataset", "protocol"], sort=False):
        lines += [f"### {ds} ({proto} protocol)", "",
                  "| Method | Backbone | Kind | Shot | Fold | Runs | Queries | mIoU own | mIoU other-class | Δ | 95% CI | p | |",
                  "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|:--|--:|:--|"]
        for x in sub.to_dict("records"):
            flag = "" if x["uses_support"] else f"**{NOT_USED}**"
            lines.append(
                f"| {x['method']} | {x['backbone']} | {x['kind']} | {x['shot']} | {fold_name(x['fold'])} | {x['n_runs']} | "
                f"{x['n_queries']} | {x['miou_own']:.1f} | {x['miou_other']:.1f} | {x['delta_miou']:+.2f} | "
                f"[{x['ci_lo']:+.2f}, {x['ci_hi']:+.2f}] | {_p(x['p_value'])} | {flag} |"
            )
        lines.append("")
    if unmatched:
        lines += [f"Control runs without an own-support run to pair with (same configuration and seeds): "
                  f"{', '.join(unmatched)}.", ""]
    return "\n".join(lines)


def reliance_summary(df: pd.DataFrame) -> list[str]:
    """One line per method (fold means where there are several folds) for the console."""
    if df.empty:
        return []
    lines = []
    for (ds, proto, label, backbone, kind, shot), sub in df.groupby(
            ["dataset", "protocol", "method", "backbone", "kind", "shot"], sort=False):
        x = sub[sub.fold == "mean"].iloc[0] if (sub.fold == "mean").any() else sub.iloc[0]
        flag = f": {NOT_USED}" if not x["uses_support"] else ""
        where = f"{ds}/{proto}" if proto else ds
        lines.append(f"support reliance {where} {label} {backbone} {kind} {shot}-shot {fold_name(x['fold'])}: "
                     f"Δ {x['delta_miou']:+.2f} [{x['ci_lo']:+.2f}, {x['ci_hi']:+.2f}] "
                     f"(own {x['miou_own']:.1f}, other-class {x['miou_other']:.1f}){flag}")
    return lines

