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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "EpisodeRecord",
    "episode_record",
    "IoUMeter",
    "compute_metrics",
    "bootstrap_ci",
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
    """Pixel counts of one scored episode (see the module docstring)."""

    episode_id: int
    class_id: int
    inter_fg: int
    union_fg: int
    inter_bg: int
    union_bg: int

    def to_dict(self) -> dict[str, int]:
        return {
            "episode_id": self.episode_id,
            "class_id": self.class_id,
            "inter_fg": self.inter_fg,
            "union_fg": self.union_fg,
            "inter_bg": self.inter_bg,
            "union_bg": self.union_bg,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EpisodeRecord":
        return cls(
            int(d["episode_id"]),
            int(d["class_id"]),
            int(d["inter_fg"]),
            int(d["union_fg"]),
            int(d["inter_bg"]),
            int(d["union_bg"]),
        )

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


def episode_record(pred: Any, label: Any, ignore: Any, episode_id: int, class_id: int) -> EpisodeRecord:
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
    n_valid = int(np.count_nonzero(valid))
    pv = p & valid
    gv = g & valid
    inter_fg = int(np.count_nonzero(pv & gv))
    union_fg = int(np.count_nonzero(pv | gv))
    # background: (~p & valid) and (~g & valid); their union is valid minus the fg intersection
    inter_bg = n_valid - union_fg
    union_bg = n_valid - inter_fg
    return EpisodeRecord(int(episode_id), int(class_id), inter_fg, union_fg, inter_bg, union_bg)


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
# vectorised statistics on stacked records
# --------------------------------------------------------------------------------------------
class _Stack:
    """Records sorted by (class, episode id) as an ``(N, 4)`` count matrix plus class blocks."""

    def __init__(self, records: Sequence[EpisodeRecord], class_ids: Iterable[int] | None) -> None:
        recs = sorted(records, key=lambda r: (r.class_id, r.episode_id))
        if not recs:
            raise ValueError("need at least one episode record")
        self.records = recs
        self.values = np.array([[r.inter_fg, r.union_fg, r.inter_bg, r.union_bg] for r in recs], dtype=np.float64)
        cls = np.array([r.class_id for r in recs], dtype=np.int64)
        self.present, self.starts, self.counts = np.unique(cls, return_index=True, return_counts=True)
        if class_ids is None:
            self.n_classes = len(self.present)
        else:
            allowed = {int(c) for c in class_ids}
            extra = sorted(set(self.present.tolist()) - allowed)
            if extra:
                raise ValueError(f"records of classes {extra} are not among class_ids")
            self.n_classes = len(allowed)
        # per-episode slot -> (start, size) of its class block, for within-class resampling
        self.slot_start = np.repeat(self.starts, self.counts)
        self.slot_size = np.repeat(self.counts, self.counts)

    def class_sums(self, weights: np.ndarray | None = None, values: np.ndarray | None = None) -> np.ndarray:
        """``(B, C_present, 4)`` per-class sums of ``weights[b, i] * values[i]``."""
        v = self.values if values is None else values
        if weights is None:
            return np.add.reduceat(v, self.starts, axis=0)[None]
        return np.stack([np.add.reduceat(weights * v[:, k], self.starts, axis=1) for k in range(4)], axis=-1)

    def metric(self, sums: np.ndarray, metric: str) -> np.ndarray:
        """Metric (percent) from ``(B, C_present, 4)`` class sums; absent classes count 0."""
        if metric == "miou":
            iou = sums[..., 0] / np.maximum(sums[..., 1], 1.0)
            return 100.0 * iou.sum(axis=-1) / self.n_classes
        tot = sums.sum(axis=-2)
        return 50.0 * (tot[..., 2] / np.maximum(tot[..., 3], 1.0) + tot[..., 0] / np.maximum(tot[..., 1], 1.0))

    def resample_weights(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``(n, N)`` resample counts: each class's episodes drawn with replacement, n_c times."""
        size = len(self.records)
        draw = self.slot_start + (rng.random((n, size)) * self.slot_size).astype(np.int64)
        draw += (np.arange(n, dtype=np.int64) * size)[:, None]
        return np.bincount(draw.ravel(), minlength=n * size).reshape(n, size).astype(np.float64)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}'; choose one of: {', '.join(METRICS)}")


def _chunks(total: int, n_episodes: int) -> list[int]:
    """Fixed-size chunks of resamples (bounded memory; independent of the machine)."""
    size = max(1, min(total, 4_000_000 // max(n_episodes, 1)))
    out = [size] * (total // size)
    if total % size:
        out.append(total % size)
    return out


def bootstrap_ci(
    records: Sequence[EpisodeRecord],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    stratify: str = "class",
    metric: str = "miou",
    class_ids: Iterable[int] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval (percent) of the class-wise accumulated ``metric``.

    ``stratify="class"``: each resample draws, for every class, as many episodes as it has,
    with replacement, from that class's episodes (every class stays present) and recomputes
    the metric from the resampled sums. ``stratify="none"``: episodes are drawn from the whole
    pool; a class that happens to get no episode then counts as IoU 0 (HSNet's rule for an
    empty class), so prefer ``"class"``. Deterministic given ``seed``.
    """
    _check_metric(metric)
    if stratify not in ("class", "none"):
        raise ValueError(f"unknown stratify '{stratify}'; choose 'class' or 'none'")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    st = _Stack(records, class_ids)
    if stratify == "none":
        st.slot_start = np.zeros_like(st.slot_start)
        st.slot_size = np.full_like(st.slot_size, len(st.records))
    rng = np.random.default_rng(seed)
    stats = np.concatenate(
        [st.metric(st.class_sums(st.resample_weights(rng, n)), metric) for n in _chunks(n_boot, len(st.records))]
    )
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


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
        }


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
    if not a:
        raise ValueError("need at least one episode record")
    return [(a[e], b[e]) for e in sorted(a)]


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
) -> PairedResult:
    """Compare two runs on the same episodes: ``delta = metric(b) - metric(a)``.

    * Interval: paired, class-stratified percentile bootstrap. Each resample draws episodes
      within each class with replacement (as :func:`bootstrap_ci`) and applies the *same*
      draw to both runs; the interval is that of ``metric(b*) - metric(a*)``.
    * p-value: two-sided paired sign-flip (randomisation) test. Under H0 the two runs are
      exchangeable on every episode, so each of ``n_perm`` randomisations swaps the records of
      a and b on each episode independently with probability 1/2 and recomputes the
      class-wise accumulated delta; ``p = (1 + #{|delta*| >= |delta|}) / (1 + n_perm)``.
      Identical runs give ``p = 1``; the smallest possible p is ``1 / (1 + n_perm)``.

    Raises ``ValueError`` unless both runs hold the same episode ids with the same classes.
    Deterministic given ``seed``.
    """
    _check_metric(metric)
    pairs = _align(records_a, records_b)
    st_a = _Stack([p[0] for p in pairs], class_ids)
    st_b = _Stack([p[1] for p in pairs], class_ids)  # same (class, episode) order as st_a
    va, vb = st_a.values, st_b.values
    value_a = float(st_a.metric(st_a.class_sums(), metric)[0])
    value_b = float(st_b.metric(st_b.class_sums(), metric)[0])
    delta = value_b - value_a
    n = len(pairs)

    rng = np.random.default_rng(seed)
    boot = []
    for size in _chunks(n_boot, n):
        w = st_a.resample_weights(rng, size)
        boot.append(st_b.metric(st_b.class_sums(w, vb), metric) - st_a.metric(st_a.class_sums(w, va), metric))
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(np.concatenate(boot), [alpha, 1.0 - alpha])

    diff = vb - va
    base_a = st_a.class_sums()  # (1, C, 4)
    base_b = st_b.class_sums()
    tol = 1e-9 * max(1.0, abs(delta))
    hits = 0
    for size in _chunks(n_perm, n):
        flip = rng.integers(0, 2, size=(size, n)).astype(np.float64)
        moved = st_a.class_sums(flip, diff)  # what flipping moves from b to a, per class
        d = st_b.metric(base_b - moved, metric) - st_a.metric(base_a + moved, metric)
        hits += int(np.count_nonzero(np.abs(d) >= abs(delta) - tol))
    p_value = (1 + hits) / (1 + n_perm)
    return PairedResult(float(delta), float(lo), float(hi), float(p_value), n, value_a, value_b, metric)


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
