"""Per-episode records, fold metrics, bootstrap intervals and paired tests.

Every scored episode becomes an :class:`EpisodeRecord` holding four pixel counts; every number
fssbench reports is computed from those records, so one inference run can be re-scored,
merged across processes, bootstrapped and compared with another run episode by episode.

Definitions (the HSNet code line, ``common/evaluation.py`` + ``common/logger.py``)
---------------------------------------------------------------------------------
Per episode, with ``V`` the non-ignored pixels of the query (ignore pixels are removed from
*both* the prediction and the label: the PFENet rule that HSNet adopted), ``P`` the predicted
foreground and ``G`` the true foreground::

    inter_fg = |P ∩ G ∩ V|          union_fg = |(P ∪ G) ∩ V|
    inter_bg = |P' ∩ G' ∩ V|        union_bg = |(P' ∪ G') ∩ V|      (' = complement)

Per class ``c`` of the fold, summing over the episodes of that class::

    IoU_c = Σ inter_fg / max(Σ union_fg, 1)

    mIoU   = 100 · mean_c IoU_c                            (over the fold's classes)
    FB-IoU = 100 · ½ (Σ_all inter_bg / Σ_all union_bg + Σ_all inter_fg / Σ_all union_fg)

This is exactly HSNet's ``AverageMeter.compute_iou``: per-class buffers, ``max(union, 1)`` guard
in the class IoU, mean over the fold's ``class_ids`` (a class of the fold with *no* episode
therefore counts as IoU 0, as in HSNet, when ``class_ids`` is given; by default the classes are
the ones that occur in the records), FB-IoU from the sums over those classes. HSNet's FB-IoU has
no guard (0/0 gives NaN); here each FB-IoU term uses ``max(Σ union, 1)`` as well, which only
differs when every pixel of every episode is ignored. mIoU is *not* the mean of per-episode
IoUs: an episode weighs in proportion to its union.

All metrics are reported in **percent** (x100, floats), like the papers; ``delta`` of a paired
test is in percentage points.

Intervals and tests resample *query images within class* (a stratified cluster bootstrap, see
:func:`bootstrap_replicates`): episodes that share a query image are not independent, and
HSNet's protocol walks its query list, so 300 episodes over 206 queries repeat 94 of them. One
implementation serves a single run, a seed mean and a fold mean (a weighted sum of runs); the
paired test applies one draw to both runs and flips signs per query cluster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "EpisodeRecord",
    "episode_record",
    "IoUMeter",
    "compute_metrics",
    "Sample",
    "bootstrap_replicates",
    "sample_statistic",
    "percentile_interval",
    "bootstrap_ci",
    "Pair",
    "paired_delta",
    "paired_test",
    "PairedResult",
    "holm",
    "METRICS",
]

METRICS: tuple[str, ...] = ("miou", "fbiou")
"""Metrics accepted by :func:`bootstrap_ci` and :func:`paired_test`."""

_FIELDS = ("inter_fg", "union_fg", "inter_bg", "union_bg")


# --------------------------------------------------------------------------------------------
# per-episode record
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeRecord:
    """Pixel counts of one scored episode (see the module docstring).

    ``query`` names the query image (episodes that share it are not independent: the bootstrap
    resamples query images, not episodes). ``extras`` holds a method's further per-episode
    numbers, flat ``name -> float``: a declared mask output ``prior`` scored under the protocol
    gives ``prior.inter_fg`` / ``prior.union_fg`` / ``prior.inter_bg`` / ``prior.union_bg``; a
    scalar output gives its own name (e.g. ``pred_iou``).
    """

    episode_id: int
    class_id: int
    inter_fg: int
    union_fg: int
    inter_bg: int
    union_bg: int
    query: str = ""
    extras: Mapping[str, float] = field(default_factory=dict, compare=True, hash=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "episode_id": self.episode_id,
            "class_id": self.class_id,
            "inter_fg": self.inter_fg,
            "union_fg": self.union_fg,
            "inter_bg": self.inter_bg,
            "union_bg": self.union_bg,
        }
        if self.query:
            d["query"] = self.query
        if self.extras:
            d["extras"] = {k: float(v) for k, v in sorted(self.extras.items())}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EpisodeRecord":
        return cls(
            int(d["episode_id"]),
            int(d["class_id"]),
            int(d["inter_fg"]),
            int(d["union_fg"]),
            int(d["inter_bg"]),
            int(d["union_bg"]),
            str(d.get("query", "")),
            {str(k): float(v) for k, v in (d.get("extras") or {}).items()},
        )

    def with_extras(self, **extras: float) -> "EpisodeRecord":
        """A copy with ``extras`` added (records are frozen)."""
        return replace(self, extras={**self.extras, **extras})

    @property
    def fg_iou(self) -> float:
        """This episode's own foreground IoU in percent (``max(union, 1)`` guard)."""
        return 100.0 * self.inter_fg / max(self.union_fg, 1)


def _binary(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == bool:
        return a
    if a.size and (a.min() < 0 or a.max() > 1 or (a.dtype.kind == "f" and not np.all((a == 0) | (a == 1)))):
        raise ValueError(
            f"{name} must be binary {{0, 1}} (got values in [{a.min()}, {a.max()}]); "
            "pass ignore pixels (e.g. 255) through the separate ignore argument"
        )
    return a != 0


def episode_record(pred: Any, label: Any, ignore: Any, episode_id: int, class_id: int, query: str = "") -> EpisodeRecord:
    """Score one binary prediction against a binary label (numpy arrays or torch tensors, H x W).

    ``ignore`` (bool, same shape, or ``None``) pixels are excluded from both the prediction
    and the label, for foreground and background counts alike.
    """
    p = _binary(pred, "pred")
    g = _binary(label, "label")
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} does not match label shape {g.shape}")
    if ignore is None:
        valid = np.ones(p.shape, dtype=bool)
    else:
        valid = ~_binary(ignore, "ignore")
        if valid.shape != p.shape:
            raise ValueError(f"ignore shape {valid.shape} does not match label shape {g.shape}")
    counts = (int(c) for c in pixel_counts(p, g, valid))
    return EpisodeRecord(int(episode_id), int(class_id), *counts, str(query))


def pixel_counts(pred: np.ndarray, label: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(inter_fg, union_fg, inter_bg, union_bg)`` of boolean ``... x H x W`` arrays, counted over
    the last two axes (one episode, or a batch of them at once)."""
    n_valid = np.count_nonzero(valid, axis=(-2, -1))
    pv = pred & valid
    gv = label & valid
    inter_fg = np.count_nonzero(pv & gv, axis=(-2, -1))
    union_fg = np.count_nonzero(pv | gv, axis=(-2, -1))
    # background: (~p & valid) and (~g & valid); their union is valid minus the fg intersection
    return inter_fg, union_fg, n_valid - union_fg, n_valid - inter_fg


# --------------------------------------------------------------------------------------------
# accumulating meter
# --------------------------------------------------------------------------------------------
def _pct(num: float, den: float) -> float:
    return 100.0 * float(num) / max(float(den), 1.0)


class IoUMeter:
    """Class-wise accumulated IoU, torchmetrics style (``update`` / ``compute`` / ``merge``).

    State: per class the summed ``inter_fg, union_fg, inter_bg, union_bg`` and the episode
    count (memory independent of the number of episodes). ``class_ids``: the fold's classes;
    when given, ``compute`` averages over exactly those (absent ones count as IoU 0, as in
    HSNet) and a record of any other class is an error. When ``None``, the classes are the
    ones seen so far.
    """

    def __init__(self, class_ids: Iterable[int] | None = None) -> None:
        self.class_ids: tuple[int, ...] | None = None if class_ids is None else tuple(sorted({int(c) for c in class_ids}))
        self._sums: dict[int, list[int]] = {}

    # -- updating -----------------------------------------------------------------------------
    def update(self, records: EpisodeRecord | Iterable[EpisodeRecord]) -> "IoUMeter":
        if isinstance(records, EpisodeRecord):
            records = (records,)
        allowed = None if self.class_ids is None else set(self.class_ids)
        for r in records:
            if allowed is not None and r.class_id not in allowed:
                raise ValueError(f"record of episode {r.episode_id} has class {r.class_id}, not one of the meter's class_ids")
            s = self._sums.setdefault(r.class_id, [0, 0, 0, 0, 0])
            s[0] += r.inter_fg
            s[1] += r.union_fg
            s[2] += r.inter_bg
            s[3] += r.union_bg
            s[4] += 1
        return self

    def merge(self, other: "IoUMeter") -> "IoUMeter":
        """Add ``other``'s state into this meter (e.g. from another worker); returns ``self``."""
        if self.class_ids != other.class_ids:
            raise ValueError(f"cannot merge meters with different class_ids: {self.class_ids} vs {other.class_ids}")
        for c, o in other._sums.items():
            s = self._sums.setdefault(c, [0, 0, 0, 0, 0])
            for i in range(5):
                s[i] += o[i]
        return self

    def reset(self) -> None:
        self._sums.clear()

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state."""
        return {
            "class_ids": None if self.class_ids is None else list(self.class_ids),
            "sums": {str(c): list(v) for c, v in sorted(self._sums.items())},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ids = state.get("class_ids")
        self.class_ids = None if ids is None else tuple(sorted(int(c) for c in ids))
        self._sums = {int(c): [int(x) for x in v] for c, v in state["sums"].items()}

    # -- results --------------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        return sum(v[4] for v in self._sums.values())

    def classes(self) -> list[int]:
        """The classes averaged by ``compute``."""
        return list(self.class_ids) if self.class_ids is not None else sorted(self._sums)

    def compute(self) -> dict[str, Any]:
        """``{"miou", "fbiou", "class_iou": {class_id: iou}, "n_episodes"}``, in percent.

        ``miou``/``fbiou`` are NaN when there is nothing to average.
        """
        classes = self.classes()
        zero = [0, 0, 0, 0, 0]
        class_iou = {c: _pct(self._sums.get(c, zero)[0], self._sums.get(c, zero)[1]) for c in classes}
        tot = [sum(self._sums.get(c, zero)[i] for c in classes) for i in range(4)]
        miou = float(np.mean(list(class_iou.values()))) if classes else math.nan
        fbiou = 0.5 * (_pct(tot[2], tot[3]) + _pct(tot[0], tot[1])) if self.n_episodes else math.nan
        return {"miou": miou, "fbiou": fbiou, "class_iou": class_iou, "n_episodes": self.n_episodes}


def compute_metrics(records: Iterable[EpisodeRecord], class_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """``IoUMeter(class_ids).update(records).compute()``."""
    return IoUMeter(class_ids).update(records).compute()


# --------------------------------------------------------------------------------------------
# the bootstrap: query images resampled within class, one implementation for every interval
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One run's records as the bootstrap sees them.

    The statistic of a list of samples is the linear combination ``Σ weight · metric(records)``:
    one run is ``[Sample(records)]``; a mean over seeds gives each run ``1/n``; a mean over folds
    of seed means gives ``1 / (n_folds · n_runs_of_fold)``; a paired Δ gives ``-1`` and ``+1``.
    ``group`` (the fold) and the class stratify the resampling; ``class_ids`` are the fold's
    classes (a class without records counts IoU 0, as in HSNet); ``tag`` names the episode list,
    so that records *without* a query name are one cluster per ``(tag, episode_id)``.
    """

    records: Sequence[EpisodeRecord]
    class_ids: tuple[int, ...] | None = None
    weight: float = 1.0
    group: Hashable = 0
    tag: str = ""


STRATIFY = ("class", "none")
CLUSTER = ("query", "episode")


class _Design:
    """Clusters of a list of samples and every sample's per-cluster sums.

    A cluster is one query image of one class within one group (``cluster="query"``; records
    without a query, or every record with ``cluster="episode"``, are their own cluster, shared by
    samples of the same group and tag with the same episode id). Samples of one group share the
    clusters, so one draw resamples the same query images in every run of the fold: the runs of a
    seed mean, or the two runs of a paired test, see the same resample.
    """

    def __init__(self, samples: Sequence[Sample], stratify: str = "class", cluster: str = "query") -> None:
        if stratify not in STRATIFY:
            raise ValueError(f"unknown stratify '{stratify}'; choose 'class' or 'none'")
        if cluster not in CLUSTER:
            raise ValueError(f"unknown cluster '{cluster}'; choose 'query' or 'episode'")
        if not samples or any(not s.records for s in samples):
            raise ValueError("need at least one episode record")
        keyed: list[list[tuple]] = []
        for s in samples:
            keyed.append([
                (s.group, r.class_id, r.query) if (cluster == "query" and r.query) else (s.group, r.class_id, "", s.tag, r.episode_id)
                for r in s.records
            ])
        all_keys = sorted({k for ks in keyed for k in ks}, key=lambda k: tuple(map(repr, k)))
        stratum = (lambda k: (k[0], k[1])) if stratify == "class" else (lambda k: (k[0],))
        all_keys.sort(key=lambda k: tuple(map(repr, stratum(k))))  # stable: clusters contiguous per stratum
        index = {k: i for i, k in enumerate(all_keys)}
        self.n_clusters = len(all_keys)
        strata = [stratum(k) for k in all_keys]
        starts = [i for i in range(len(strata)) if i == 0 or strata[i] != strata[i - 1]]
        sizes = np.diff([*starts, len(strata)])
        self.slot_start = np.repeat(np.array(starts, dtype=np.int64), sizes)
        self.slot_size = np.repeat(sizes.astype(np.int64), sizes)
        self.parts: list[_Part] = []
        for s, ks in zip(samples, keyed):
            cls = np.array([r.class_id for r in s.records], dtype=np.int64)
            if s.class_ids is None:
                classes = np.unique(cls)
            else:
                classes = np.array(sorted({int(c) for c in s.class_ids}), dtype=np.int64)
                extra = sorted(set(cls.tolist()) - set(classes.tolist()))
                if extra:
                    raise ValueError(f"records of classes {extra} are not among class_ids")
            cl, inv = np.unique(np.array([index[k] for k in ks], dtype=np.int64), return_inverse=True)
            vals = np.array([[r.inter_fg, r.union_fg, r.inter_bg, r.union_bg] for r in s.records], dtype=np.float64)
            sums = np.zeros((len(cl), 4))
            np.add.at(sums, inv, vals)
            col = np.zeros(len(cl), dtype=np.int64)
            col[inv] = np.searchsorted(classes, cls)  # a cluster lies in one class
            order = np.lexsort((cl, col))  # clusters grouped by class, for reduceat
            cl, sums, col = cl[order], sums[order], col[order]
            starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
            self.parts.append(_Part(cl, sums, starts, len(classes), float(s.weight)))

    def weights(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, K)`` resample counts: every stratum's clusters drawn with replacement, as many as it has."""
        k = self.n_clusters
        draw = self.slot_start + (rng.random((n, k)) * self.slot_size).astype(np.int64)
        draw += (np.arange(n, dtype=np.int64) * k)[:, None]
        return np.bincount(draw.ravel(), minlength=n * k).reshape(n, k).astype(np.float64)

    def statistic(self, w: np.ndarray, metric: str) -> np.ndarray:
        """``Σ weight · metric`` (percent) for each row of cluster counts ``w`` ``(B, K)``."""
        out = np.zeros(w.shape[0])
        for p in self.parts:
            out += p.weight * p.metric(w[:, p.clusters], metric)
        return out


@dataclass(frozen=True)
class _Part:
    """One sample in a :class:`_Design`: its clusters (global indices, grouped by class) and sums."""

    clusters: np.ndarray  # (K_r,) global cluster indices
    sums: np.ndarray  # (K_r, 4) each cluster's counts
    starts: np.ndarray  # first position of each present class's block of clusters
    n_classes: int  # the fold's classes (absent ones count IoU 0)
    weight: float

    def class_sums(self, w: np.ndarray) -> np.ndarray:
        """``(B, C_present, 4)`` class sums for cluster counts ``w`` ``(B, K_r)``."""
        return np.stack([np.add.reduceat(w * self.sums[:, f], self.starts, axis=1) for f in range(4)], axis=-1)

    def metric(self, w: np.ndarray, metric: str) -> np.ndarray:
        return _metric_from_sums(self.class_sums(w), self.n_classes, metric)


def _metric_from_sums(sums: np.ndarray, n_classes: int, metric: str) -> np.ndarray:
    """Metric (percent) from ``(..., C, 4)`` class sums over ``n_classes`` classes (absent ones count 0)."""
    if metric == "miou":
        return 100.0 * (sums[..., 0] / np.maximum(sums[..., 1], 1.0)).sum(axis=-1) / max(n_classes, 1)
    tot = sums.sum(axis=-2)
    return 50.0 * (tot[..., 2] / np.maximum(tot[..., 3], 1.0) + tot[..., 0] / np.maximum(tot[..., 1], 1.0))


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _chunks(total: int, width: int) -> list[int]:
    """Fixed-size chunks of resamples (bounded memory; independent of the machine)."""
    size = max(1, min(total, 4_000_000 // max(width, 1)))
    out = [size] * (total // size)
    if total % size:
        out.append(total % size)
    return out


def sample_statistic(samples: Sequence[Sample], metric: str = "miou") -> float:
    """The point value ``Σ weight · metric(records)`` of :func:`bootstrap_replicates`."""
    _check_metric(metric)
    d = _Design(samples)
    return float(d.statistic(np.ones((1, d.n_clusters)), metric)[0])


def bootstrap_replicates(
    samples: Sequence[Sample],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    metric: str = "miou",
    stratify: str = "class",
    cluster: str = "query",
) -> np.ndarray:
    """``n_boot`` bootstrap values of ``Σ weight · metric`` over ``samples`` (see :class:`Sample`).

    A *stratified cluster bootstrap*: within every (group, class) the clusters (query images,
    see :class:`_Design`) are drawn with replacement, as many as the stratum has, and each run's
    metric is recomputed from the resampled class sums. Resampling query images rather than
    episodes matters under HSNet's protocol, which walks its query list: 300 episodes over 206
    queries repeat 94 of them, and those repeats are not independent evidence.

    Why not ``scipy.stats.bootstrap``: it resamples observations of each sample independently and
    has no strata, so it cannot keep every class's cluster count, nor apply one draw to several
    runs that share query images. ``stratify="none"`` draws clusters from the whole group (a class
    that gets none counts IoU 0); ``cluster="episode"`` is the episode bootstrap.
    Deterministic given ``seed``.
    """
    _check_metric(metric)
    d = _Design(samples, stratify, cluster)
    rng = np.random.default_rng(seed)
    return np.concatenate([d.statistic(d.weights(rng, n), metric) for n in _chunks(n_boot, d.n_clusters)])


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN ones dropped; NaN when none is left)."""
    _check_level(level)
    reps = np.asarray(replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    records: Sequence[EpisodeRecord],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stratify: str = "class",
    metric: str = "miou",
    class_ids: Iterable[int] | None = None,
    cluster: str = "query",
) -> tuple[float, float]:
    """Percentile bootstrap interval (percent) of one run's class-wise accumulated ``metric``.

    :func:`bootstrap_replicates` of one sample: within each class, query images (with all their
    episodes) are drawn with replacement, as many as the class has; records without a query are
    single clusters, so for them this is the class-stratified episode bootstrap.
    ``stratify="none"`` draws from the whole pool (a class that gets nothing counts IoU 0,
    HSNet's rule for an empty class), so prefer ``"class"``. Deterministic given ``seed``.
    """
    _check_level(level)
    ids = None if class_ids is None else tuple(int(c) for c in class_ids)
    reps = bootstrap_replicates([Sample(list(records), ids)], n_boot=n_boot, seed=seed, metric=metric,
                                stratify=stratify, cluster=cluster)
    return percentile_interval(reps, level)


# --------------------------------------------------------------------------------------------
# paired comparisons
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedResult:
    """Outcome of :func:`paired_test`; ``delta = metric(b) - metric(a)`` in percentage points."""

    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    value_a: float = math.nan
    value_b: float = math.nan
    metric: str = "miou"
    n_clusters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "n": self.n,
            "value_a": self.value_a,
            "value_b": self.value_b,
            "metric": self.metric,
            "n_clusters": self.n_clusters,
        }


@dataclass(frozen=True)
class Pair:
    """Two runs on the same episodes (``a`` the reference); ``weight``/``group``/``tag`` as in
    :class:`Sample`. :func:`paired_delta` of several pairs compares weighted means (seed or fold
    means) of ``b`` with those of ``a``."""

    a: Sequence[EpisodeRecord]
    b: Sequence[EpisodeRecord]
    class_ids: tuple[int, ...] | None = None
    weight: float = 1.0
    group: Hashable = 0
    tag: str = ""


def _align(records_a: Sequence[EpisodeRecord], records_b: Sequence[EpisodeRecord]) -> list[tuple[EpisodeRecord, EpisodeRecord]]:
    def index(recs: Sequence[EpisodeRecord], name: str) -> dict[int, EpisodeRecord]:
        out: dict[int, EpisodeRecord] = {}
        for r in recs:
            if r.episode_id in out:
                raise ValueError(f"run {name} has episode id {r.episode_id} more than once")
            out[r.episode_id] = r
        return out

    a, b = index(records_a, "a"), index(records_b, "b")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(
            "paired test needs the same episodes in both runs: "
            f"{len(only_a)} only in a (e.g. {only_a[:5]}), {len(only_b)} only in b (e.g. {only_b[:5]})"
        )
    wrong = [e for e in a if a[e].class_id != b[e].class_id]
    if wrong:
        e = wrong[0]
        raise ValueError(
            f"paired test needs identical episodes: {len(wrong)} episode ids have different classes "
            f"(e.g. episode {e}: class {a[e].class_id} in a, {b[e].class_id} in b)"
        )
    other = [e for e in a if a[e].query and b[e].query and a[e].query != b[e].query]
    if other:
        e = other[0]
        raise ValueError(
            f"paired test needs identical episodes: {len(other)} episode ids have different query images "
            f"(e.g. episode {e}: '{a[e].query}' in a, '{b[e].query}' in b)"
        )
    if not a:
        raise ValueError("need at least one episode record")
    return [(a[e], b[e]) for e in sorted(a)]


def _rng_argument(seed: int) -> dict[str, Any]:
    """``rng=`` (SciPy >= 1.15) or ``random_state=`` (older) for ``scipy.stats.permutation_test``."""
    import inspect

    from scipy import stats

    name = "rng" if "rng" in inspect.signature(stats.permutation_test).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def paired_delta(
    pairs: Sequence[Pair],
    *,
    n_boot: int = 1000,
    n_perm: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    metric: str = "miou",
    cluster: str = "query",
) -> PairedResult:
    """``delta = Σ weight · (metric(b) - metric(a))`` over ``pairs``, with interval and p-value.

    * Interval: the paired form of :func:`bootstrap_replicates`: one stratified cluster draw of
      query images is applied to both runs of every pair (the clusters of ``a`` and ``b`` are the
      same images), and the interval is the percentile interval of the resampled delta.
    * p-value: two-sided paired sign-flip test, ``scipy.stats.permutation_test`` with
      ``permutation_type="samples"``: under H0 the two runs are exchangeable on every *query
      cluster* (all episodes of a query image swap together, since they are not independent), so
      each randomisation swaps a and b on each cluster with probability 1/2 and recomputes the
      class-wise accumulated delta. SciPy enumerates all ``2^K`` flips when that is at most
      ``n_perm`` (exact test); otherwise ``p`` is ``2 · min`` of the one-sided ``(1 + hits) /
      (1 + n_perm)``, capped at 1. Identical runs give ``p = 1``.

    Raises ``ValueError`` unless each pair holds the same episode ids with the same classes (and,
    where both name them, the same query images). Deterministic given ``seed``.
    """
    from scipy import stats

    _check_metric(metric)
    _check_level(level)
    if not pairs:
        raise ValueError("need at least one pair of runs")
    aligned = [_align(p.a, p.b) for p in pairs]
    # both records of an episode name the same query (whichever run recorded it), so both runs of
    # a pair fall into the same clusters; a's samples enter with -weight: the statistic is Δ
    a_samples, b_samples = [], []
    for p, al in zip(pairs, aligned):
        a_samples.append(Sample([replace(x, query=x.query or y.query) for x, y in al], p.class_ids, -p.weight, p.group, p.tag))
        b_samples.append(Sample([replace(y, query=x.query or y.query) for x, y in al], p.class_ids, p.weight, p.group, p.tag))
    design = _Design([*a_samples, *b_samples], "class", cluster)
    parts_a, parts_b = design.parts[: len(pairs)], design.parts[len(pairs):]
    k = design.n_clusters

    def value(parts: Sequence[_Part]) -> float:
        return float(sum(abs(p.weight) * p.metric(np.ones((1, len(p.clusters))), metric)[0] for p in parts))

    value_a, value_b = value(parts_a), value(parts_b)
    delta = value_b - value_a
    n = sum(len(al) for al in aligned)

    rng = np.random.default_rng(seed)
    boot = np.concatenate([design.statistic(design.weights(rng, size), metric) for size in _chunks(n_boot, k)])
    lo, hi = percentile_interval(boot, level)

    flips = []  # per pair: what a flip moves from a to b (per cluster), a's and b's class sums
    for pa, pb in zip(parts_a, parts_b):
        if not (np.array_equal(pa.clusters, pb.clusters) and np.array_equal(pa.starts, pb.starts)):  # pragma: no cover
            raise ValueError("paired runs do not share their query clusters")
        moved = _Part(pa.clusters, pa.sums - pb.sums, pa.starts, pa.n_classes, pb.weight)
        flips.append((moved, pa.class_sums(np.ones((1, len(pa.clusters)))), pb.class_sums(np.ones((1, len(pb.clusters))))))

    def stat(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        """Δ after flips: ``x`` holds cluster indices, ``k + i`` where cluster ``i`` swapped a and b."""
        x2 = np.atleast_2d(x)
        out = np.zeros(x2.shape[0])
        for moved, base_a, base_b in flips:
            d = moved.class_sums((x2[:, moved.clusters] >= k).astype(np.float64))  # a's counts that went to b
            out += moved.weight * (_metric_from_sums(base_b + d, moved.n_classes, metric)
                                   - _metric_from_sums(base_a - d, moved.n_classes, metric))
        return out if np.ndim(x) > 1 else out[0]

    idx = np.arange(k)
    res = stats.permutation_test(
        (idx, idx + k), stat, permutation_type="samples", vectorized=True, n_resamples=n_perm,
        batch=max(1, 1_000_000 // max(k, 1)), alternative="two-sided", **_rng_argument(seed + 1),
    )
    p_value = float(min(1.0, res.pvalue))
    return PairedResult(float(delta), lo, hi, p_value, n, value_a, value_b, metric, k)


def paired_test(
    records_a: Sequence[EpisodeRecord],
    records_b: Sequence[EpisodeRecord],
    *,
    n_boot: int = 1000,
    n_perm: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    metric: str = "miou",
    class_ids: Iterable[int] | None = None,
    cluster: str = "query",
) -> PairedResult:
    """Compare two runs on the same episodes: ``delta = metric(b) - metric(a)``.

    :func:`paired_delta` of one :class:`Pair`: paired cluster-bootstrap interval (one draw of
    query images within class, applied to both runs) and two-sided sign-flip p-value (flips per
    query cluster). Raises ``ValueError`` unless both runs hold the same episode ids with the same
    classes. Deterministic given ``seed``.
    """
    ids = None if class_ids is None else tuple(int(c) for c in class_ids)
    return paired_delta([Pair(list(records_a), list(records_b), ids)], n_boot=n_boot, n_perm=n_perm, seed=seed,
                        level=level, metric=metric, cluster=cluster)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With ``p_(1) <= ... <= p_(m)``: ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    Reject ``H_i`` at family-wise level ``alpha`` iff ``adj_i <= alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return p.copy()
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adj_sorted
    return out
