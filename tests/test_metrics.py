"""Episode records, class-wise accumulated mIoU / FB-IoU, bootstrap intervals, paired tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fssbench.metrics import (
    EpisodeRecord,
    IoUMeter,
    Pair,
    PairedResult,
    Sample,
    bootstrap_ci,
    bootstrap_replicates,
    compute_metrics,
    episode_record,
    holm,
    paired_delta,
    paired_test,
    percentile_interval,
    sample_statistic,
)


def synthetic_run(n: int, n_classes: int = 5, quality: float = 0.6, seed: int = 0, noise_seed: int | None = None) -> list[EpisodeRecord]:
    """Episode records with class-dependent difficulty; ``quality`` shifts every episode."""
    rng = np.random.default_rng(seed)
    nrng = np.random.default_rng(seed if noise_seed is None else noise_seed)
    recs = []
    total = 10_000
    for e in range(n):
        c = e % n_classes
        union = int(rng.integers(200, 3000))
        base = 0.3 + 0.1 * c + rng.normal(0, 0.1)
        frac = float(np.clip(base + (quality - 0.6) + nrng.normal(0, 0.05), 0.0, 1.0))
        inter = int(round(frac * union))
        recs.append(EpisodeRecord(e, c, inter, union, total - union, total - inter))
    return recs


# --------------------------------------------------------------------------- episode_record
def test_episode_record_hand_computed() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    label = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    # fg: P={(0,0),(0,1),(1,1)}, G={(0,0),(1,0),(1,1)} -> inter 2, union 4
    # bg: P'=6 pixels, G'=6 pixels, P'∩G' = 9 - 4 = 5, P'∪G' = 9 - 2 = 7
    r = episode_record(pred, label, None, episode_id=3, class_id=7)
    assert r == EpisodeRecord(3, 7, 2, 4, 5, 7)
    assert r.fg_iou == pytest.approx(50.0)


def test_episode_record_excludes_ignore_from_pred_and_label() -> None:
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]])
    label = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    ignore = np.zeros((3, 3), bool)
    ignore[0, 1] = True  # a false positive that is ignored
    ignore[2, 2] = True  # another ignored false positive
    ignore[1, 0] = True  # a false negative that is ignored
    r = episode_record(pred, label, ignore, 0, 1)
    # 6 valid pixels; fg P={(0,0),(1,1)}, G={(0,0),(1,1)} -> inter 2 union 2; bg: 4 / 4
    assert (r.inter_fg, r.union_fg, r.inter_bg, r.union_bg) == (2, 2, 4, 4)


def test_episode_record_torch_equals_numpy() -> None:
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 2, (17, 23))
    label = rng.integers(0, 2, (17, 23))
    ign = rng.random((17, 23)) < 0.1
    a = episode_record(pred, label, ign, 1, 2)
    b = episode_record(torch.from_numpy(pred), torch.from_numpy(label).long(), torch.from_numpy(ign), 1, 2)
    c = episode_record(pred.astype(bool), label.astype(np.float32), ign, 1, 2)
    assert a == b == c


def test_episode_record_rejects_non_binary_and_mismatched_shapes() -> None:
    label = np.zeros((4, 4), np.uint8)
    with pytest.raises(ValueError, match="binary"):
        episode_record(np.full((4, 4), 0.7), label, None, 0, 0)
    label255 = label.copy()
    label255[0, 0] = 255
    with pytest.raises(ValueError, match="ignore"):
        episode_record(np.zeros((4, 4)), label255, None, 0, 0)
    with pytest.raises(ValueError, match="shape"):
        episode_record(np.zeros((4, 5)), label, None, 0, 0)


def test_record_dict_roundtrip() -> None:
    r = EpisodeRecord(5, 2, 10, 20, 30, 40)
    d = json.loads(json.dumps(r.to_dict()))
    assert EpisodeRecord.from_dict(d) == r


# -------------------------------------------------------------------------------- IoUMeter
def test_miou_is_class_wise_accumulation_not_mean_of_episodes() -> None:
    recs = [
        EpisodeRecord(0, 1, 90, 100, 0, 0),  # class 1: big, good
        EpisodeRecord(1, 1, 0, 10, 0, 0),  # class 1: small, failed
        EpisodeRecord(2, 2, 5, 10, 0, 0),  # class 2
    ]
    out = compute_metrics(recs)
    # class 1: (90 + 0) / (100 + 10) = 81.818..., class 2: 50
    assert out["class_iou"] == {1: pytest.approx(100 * 90 / 110), 2: pytest.approx(50.0)}
    assert out["miou"] == pytest.approx((100 * 90 / 110 + 50) / 2)
    assert out["n_episodes"] == 3
    mean_of_episodes = np.mean([r.fg_iou for r in recs])  # (90 + 0 + 50) / 3 = 46.67
    assert mean_of_episodes == pytest.approx(140 / 3)
    assert out["miou"] > mean_of_episodes + 15


def test_fbiou_formula() -> None:
    recs = [EpisodeRecord(0, 1, 3, 5, 80, 90), EpisodeRecord(1, 2, 1, 4, 60, 62)]
    out = compute_metrics(recs)
    fg = (3 + 1) / (5 + 4)
    bg = (80 + 60) / (90 + 62)
    assert out["fbiou"] == pytest.approx(100 * (fg + bg) / 2)


def test_union_zero_guard() -> None:
    # a class whose episodes have empty fg union counts as IoU 0 (max(union, 1) guard)
    out = compute_metrics([EpisodeRecord(0, 1, 0, 0, 10, 10), EpisodeRecord(1, 2, 4, 4, 6, 6)])
    assert out["class_iou"] == {1: 0.0, 2: 100.0}
    assert out["miou"] == pytest.approx(50.0)


def test_meter_class_ids_absent_class_counts_zero_and_foreign_class_rejected() -> None:
    recs = [EpisodeRecord(0, 1, 5, 10, 0, 0), EpisodeRecord(1, 2, 10, 10, 0, 0)]
    m = IoUMeter(class_ids=[1, 2, 3, 4])
    m.update(recs)
    out = m.compute()
    assert out["class_iou"][3] == 0.0 and out["class_iou"][4] == 0.0
    assert out["miou"] == pytest.approx((50 + 100 + 0 + 0) / 4)
    with pytest.raises(ValueError):
        m.update(EpisodeRecord(2, 9, 1, 1, 1, 1))


def test_merge_equals_single_meter_and_state_dict_roundtrip() -> None:
    recs = synthetic_run(60, n_classes=4)
    single = IoUMeter().update(recs)
    parts = [IoUMeter().update(recs[i::3]) for i in range(3)]
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert merged.compute() == single.compute()
    state = json.loads(json.dumps(single.state_dict()))
    restored = IoUMeter()
    restored.load_state_dict(state)
    assert restored.compute() == single.compute()
    restored.reset()
    assert restored.n_episodes == 0
    with pytest.raises(ValueError):
        IoUMeter(class_ids=[0, 1]).merge(IoUMeter())


def test_meter_update_one_by_one_equals_batch() -> None:
    recs = synthetic_run(25)
    m1 = IoUMeter()
    for r in recs:
        m1.update(r)
    assert m1.compute() == IoUMeter().update(recs).compute()


def test_empty_meter() -> None:
    out = IoUMeter().compute()
    assert np.isnan(out["miou"]) and np.isnan(out["fbiou"]) and out["n_episodes"] == 0


def _hsnet_algebra(preds, labels, ignores, class_ids, nclass, fold_classes):
    """HSNet's evaluation written out with numpy, step by step from its code:

    * ``Evaluator.classify_prediction``: ignore pixels set to 255 in the label *and* the
      prediction; ``torch.histc(bins=2, min=0, max=1)`` of the prediction, the label and the
      agreeing pixels (255 falls outside [0, 1] and is not counted); union = pred + gt - inter.
    * ``AverageMeter.update``: ``index_add_`` into [2, nclass] buffers (row 0 bg, row 1 fg).
    * ``AverageMeter.compute_iou``: iou = inter / max(union, 1); keep the fold's classes;
      mIoU = mean of row 1 * 100; FB-IoU = mean over rows of (sum inter / sum union) * 100.
    """
    inter_buf = np.zeros((2, nclass))
    union_buf = np.zeros((2, nclass))
    for pred, gt, ign, c in zip(preds, labels, ignores, class_ids):
        pred = pred.astype(np.float64).copy()
        gt = gt.astype(np.float64) + 255.0 * ign
        pred[gt == 255] = 255
        agree = pred[pred == gt]
        hist = lambda x: np.histogram(x, bins=2, range=(0, 1))[0]  # noqa: E731  (== histc)
        area_inter = hist(agree)
        area_union = hist(pred) + hist(gt) - area_inter
        inter_buf[:, c] += area_inter
        union_buf[:, c] += area_union
    iou = inter_buf / np.maximum(union_buf, 1.0)
    iou = iou[:, fold_classes]
    miou = iou[1].mean() * 100
    fb = (inter_buf[:, fold_classes].sum(1) / union_buf[:, fold_classes].sum(1)).mean() * 100
    return miou, fb


def test_matches_hsnet_algebra_on_small_tensors() -> None:
    rng = np.random.default_rng(42)
    nclass, fold_classes = 8, [2, 3, 5, 6]
    preds, labels, ignores, cids = [], [], [], []
    for e in range(30):
        h, w = 9, 11
        label = (rng.random((h, w)) < 0.4).astype(np.int64)
        pred = np.where(rng.random((h, w)) < 0.75, label, 1 - label)
        ign = (rng.random((h, w)) < 0.15) & (label == 0)  # HSNet asserts ignore ∩ label = ∅
        preds.append(pred)
        labels.append(label)
        ignores.append(ign)
        cids.append(fold_classes[e % 3])  # class 6 of the fold never occurs
    ref_miou, ref_fb = _hsnet_algebra(preds, labels, ignores, cids, nclass, fold_classes)

    recs = [
        episode_record(torch.from_numpy(p), torch.from_numpy(g), torch.from_numpy(i), e, c)
        for e, (p, g, i, c) in enumerate(zip(preds, labels, ignores, cids))
    ]
    out = IoUMeter(class_ids=fold_classes).update(recs).compute()
    assert abs(out["miou"] - ref_miou) < 1e-6
    assert abs(out["fbiou"] - ref_fb) < 1e-6
    # without class_ids the fold is the classes seen (6 absent): mean over 3 classes
    seen = compute_metrics(recs)
    assert abs(seen["miou"] - ref_miou * 4 / 3) < 1e-6
    assert abs(seen["fbiou"] - ref_fb) < 1e-6


# ---------------------------------------------------------------------------------- bootstrap
def test_bootstrap_contains_point_and_shrinks_with_more_episodes() -> None:
    small = synthetic_run(100)
    large = synthetic_run(2000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=500, seed=0)
    lo_l, hi_l = bootstrap_ci(large, n_boot=500, seed=0)
    assert lo_s <= compute_metrics(small)["miou"] <= hi_s
    assert lo_l <= compute_metrics(large)["miou"] <= hi_l
    assert (hi_l - lo_l) < 0.5 * (hi_s - lo_s)
    lo_f, hi_f = bootstrap_ci(small, n_boot=500, seed=0, metric="fbiou")
    assert lo_f <= compute_metrics(small)["fbiou"] <= hi_f


def test_bootstrap_deterministic_and_seed_dependent() -> None:
    recs = synthetic_run(200)
    assert bootstrap_ci(recs, seed=3) == bootstrap_ci(recs, seed=3)
    assert bootstrap_ci(recs, seed=3) != bootstrap_ci(recs, seed=4)


def test_bootstrap_is_stratified_by_class() -> None:
    # one episode per class: a within-class resample always redraws the same episodes
    recs = [EpisodeRecord(e, e, 10 * e, 100, 50, 60) for e in range(6)]
    point = compute_metrics(recs)["miou"]
    lo, hi = bootstrap_ci(recs, n_boot=200, seed=0)
    assert lo == pytest.approx(point) and hi == pytest.approx(point)
    # unstratified resampling loses classes and the interval opens up
    lo_n, hi_n = bootstrap_ci(recs, n_boot=200, seed=0, stratify="none")
    assert hi_n - lo_n > 1.0
    with pytest.raises(ValueError):
        bootstrap_ci(recs, stratify="bogus")


def test_bootstrap_matches_naive_loop() -> None:
    recs = synthetic_run(40, n_classes=4)
    lo, hi = bootstrap_ci(recs, n_boot=2000, seed=1)
    # an independent, slow implementation: same distribution, different random stream
    rng = np.random.default_rng(123)
    by_class: dict[int, list[EpisodeRecord]] = {}
    for r in recs:
        by_class.setdefault(r.class_id, []).append(r)
    stats = []
    for _ in range(2000):
        ious = []
        for rs in by_class.values():
            pick = [rs[i] for i in rng.integers(0, len(rs), len(rs))]
            ious.append(sum(r.inter_fg for r in pick) / sum(r.union_fg for r in pick))
        stats.append(100 * np.mean(ious))
    ref_lo, ref_hi = np.quantile(stats, [0.025, 0.975])
    width = ref_hi - ref_lo
    assert abs(lo - ref_lo) < 0.15 * width and abs(hi - ref_hi) < 0.15 * width


# -------------------------------------------------------------------------------- paired test
def test_paired_identical_runs() -> None:
    recs = synthetic_run(300)
    res = paired_test(recs, list(reversed(recs)), n_boot=300, n_perm=500, seed=0)
    assert isinstance(res, PairedResult)
    assert res.delta == 0.0 and res.ci_low == 0.0 and res.ci_high == 0.0
    assert res.p_value == 1.0 and res.n == 300


def test_paired_clearly_better_run() -> None:
    a = synthetic_run(400, quality=0.6, seed=0, noise_seed=1)
    b = synthetic_run(400, quality=0.63, seed=0, noise_seed=2)
    res = paired_test(a, b, n_boot=500, n_perm=2000, seed=0)
    assert res.delta > 2.0
    assert res.ci_low > 0.0 and res.ci_low <= res.delta <= res.ci_high
    assert res.p_value < 0.01
    assert res.value_b - res.value_a == pytest.approx(res.delta)
    assert res.value_a == pytest.approx(compute_metrics(a)["miou"])
    rev = paired_test(b, a, n_boot=500, n_perm=2000, seed=0)
    assert rev.delta == pytest.approx(-res.delta)
    assert rev.p_value == pytest.approx(res.p_value, abs=0.01)
    fb = paired_test(a, b, n_boot=200, n_perm=500, seed=0, metric="fbiou")
    assert fb.delta == pytest.approx(compute_metrics(b)["fbiou"] - compute_metrics(a)["fbiou"])


def test_paired_pure_noise_is_not_significant() -> None:
    a = synthetic_run(400, seed=0, noise_seed=1)
    b = synthetic_run(400, seed=0, noise_seed=2)
    res = paired_test(a, b, n_boot=500, n_perm=2000, seed=0)
    assert res.p_value > 0.05
    assert res.ci_low < 0.0 < res.ci_high


def test_paired_test_deterministic() -> None:
    a = synthetic_run(100, seed=0, noise_seed=1)
    b = synthetic_run(100, seed=0, noise_seed=2)
    assert paired_test(a, b, n_boot=200, n_perm=300, seed=5) == paired_test(a, b, n_boot=200, n_perm=300, seed=5)


def test_paired_requires_same_episodes() -> None:
    a = synthetic_run(20)
    with pytest.raises(ValueError, match="same episodes"):
        paired_test(a, a[:-1])
    moved = [EpisodeRecord(r.episode_id, r.class_id + (1 if r.episode_id == 4 else 0), r.inter_fg, r.union_fg, r.inter_bg, r.union_bg) for r in a]
    with pytest.raises(ValueError, match="different classes"):
        paired_test(a, moved)
    with pytest.raises(ValueError, match="more than once"):
        paired_test(a + a[:1], a + a[:1])


# ---------------------------------------------------------------------------------------- holm
def test_holm() -> None:
    adj = holm([0.01, 0.04, 0.03, 0.5])
    # sorted 0.01, 0.03, 0.04, 0.5 -> 0.04, 0.09, max(0.08, 0.09) = 0.09, 0.5
    np.testing.assert_allclose(adj, [0.04, 0.09, 0.09, 0.5])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])
    assert holm([]).size == 0
    with pytest.raises(ValueError):
        holm([0.1, 1.5])


# ------------------------------------------------------------------- cluster bootstrap (queries)
def _walked(n_queries: int, per_query: int, n_classes: int = 3, seed: int = 0) -> list[EpisodeRecord]:
    """HSNet-style: each class's episodes walk its query list ``per_query`` times; an episode's
    counts depend on its query only (repeats of a query are the same evidence)."""
    rng = np.random.default_rng(seed)
    recs, eid = [], 0
    for c in range(n_classes):
        quality = rng.uniform(0.2, 0.9, n_queries)
        unions = rng.integers(500, 3000, n_queries)
        for _ in range(per_query):
            for q in range(n_queries):
                inter = int(quality[q] * unions[q])
                recs.append(EpisodeRecord(eid, c, inter, int(unions[q]), 5000 - int(unions[q]), 5000 - inter, f"q{c}_{q}"))
                eid += 1
    return recs


def _merged(records: list[EpisodeRecord]) -> list[EpisodeRecord]:
    """One record per (class, query) with the summed counts, episode ids in query-name order."""
    sums: dict[tuple[int, str], list[int]] = {}
    for r in records:
        s = sums.setdefault((r.class_id, r.query), [0, 0, 0, 0])
        for i, f in enumerate(("inter_fg", "union_fg", "inter_bg", "union_bg")):
            s[i] += getattr(r, f)
    out = []
    for c in sorted({c for c, _ in sums}):
        for i, q in enumerate(sorted(q for cc, q in sums if cc == c)):
            out.append(EpisodeRecord(i, c, *sums[(c, q)]))
    return out


def test_repeated_queries_widen_the_interval_and_equal_the_cluster_computation() -> None:
    recs = _walked(n_queries=6, per_query=3)  # 54 episodes, 18 distinct queries
    lo_q, hi_q = bootstrap_ci(recs, n_boot=2000, seed=0)  # default: query clusters
    lo_e, hi_e = bootstrap_ci(recs, n_boot=2000, seed=0, cluster="episode")
    assert (hi_q - lo_q) > 1.4 * (hi_e - lo_e)  # ~sqrt(3): each query counted 3 times
    # the cluster bootstrap is the episode bootstrap of the per-query sums, draw for draw
    assert (lo_q, hi_q) == pytest.approx(bootstrap_ci(_merged(recs), n_boot=2000, seed=0, cluster="episode"), abs=1e-9)
    with pytest.raises(ValueError, match="cluster"):
        bootstrap_ci(recs, cluster="image")


def test_records_without_query_are_their_own_cluster() -> None:
    recs = _walked(n_queries=6, per_query=3)
    bare = [EpisodeRecord(r.episode_id, r.class_id, r.inter_fg, r.union_fg, r.inter_bg, r.union_bg) for r in recs]
    assert bootstrap_ci(bare, n_boot=500, seed=2) == bootstrap_ci(recs, n_boot=500, seed=2, cluster="episode")


def test_one_draw_for_every_run_of_a_fold() -> None:
    """Two runs on the same query images share the draw: the mean of two identical runs has the
    single run's interval (independent draws would narrow it by ~sqrt(2))."""
    recs = _walked(n_queries=8, per_query=2)
    one = percentile_interval(bootstrap_replicates([Sample(recs)], n_boot=1000, seed=0))
    two = percentile_interval(bootstrap_replicates([Sample(recs, weight=0.5), Sample(list(recs), weight=0.5)], n_boot=1000, seed=0))
    assert two == pytest.approx(one, abs=1e-9)
    # different folds (groups) are drawn independently: the fold mean is narrower than one fold
    folds = percentile_interval(bootstrap_replicates([Sample(recs, weight=0.5, group=0), Sample(recs, weight=0.5, group=1)],
                                                     n_boot=1000, seed=0))
    assert (folds[1] - folds[0]) < 0.85 * (one[1] - one[0])
    assert sample_statistic([Sample(recs, weight=0.5, group=0), Sample(recs, weight=0.5, group=1)]) == pytest.approx(
        compute_metrics(recs)["miou"])


def test_empty_fold_class_counts_zero_in_the_bootstrap() -> None:
    recs = _walked(n_queries=4, per_query=1, n_classes=3)
    full = compute_metrics(recs)["miou"]
    with_empty = compute_metrics(recs, class_ids=[0, 1, 2, 3])["miou"]
    assert with_empty == pytest.approx(full * 3 / 4)
    assert sample_statistic([Sample(recs, (0, 1, 2, 3))]) == pytest.approx(with_empty)
    lo, hi = bootstrap_ci(recs, n_boot=500, seed=0, class_ids=[0, 1, 2, 3])
    assert lo < with_empty < hi < full


def test_paired_sign_flips_per_query_cluster() -> None:
    """b beats a on every episode; 2 classes x 2 queries = 4 clusters, so the exact sign-flip
    test over 2^4 flips cannot go below 2/16, however many episodes repeat those queries."""
    a = _walked(n_queries=2, per_query=8, n_classes=2)
    b = [EpisodeRecord(r.episode_id, r.class_id, min(r.inter_fg + 100, r.union_fg), r.union_fg, r.inter_bg, r.union_bg, r.query)
         for r in a]
    res = paired_test(a, b, n_boot=500, n_perm=1000, seed=0)
    assert res.n == 32 and res.n_clusters == 4
    assert res.delta > 0 and res.p_value == pytest.approx(2 / 16)
    # per episode (32 clusters) the same data look overwhelming
    per_episode = paired_test(a, b, n_boot=500, n_perm=1000, seed=0, cluster="episode")
    assert per_episode.p_value == pytest.approx(2 / 1001)
    # the paired interval uses the same clusters: wider than the per-episode one
    assert (res.ci_high - res.ci_low) > (per_episode.ci_high - per_episode.ci_low)


def test_paired_delta_of_fold_means() -> None:
    a0, a1 = synthetic_run(60, seed=0, noise_seed=1), synthetic_run(60, seed=1, noise_seed=1)
    b0, b1 = synthetic_run(60, seed=0, noise_seed=2, quality=0.65), synthetic_run(60, seed=1, noise_seed=2, quality=0.65)
    res = paired_delta([Pair(a0, b0, weight=0.5, group=0), Pair(a1, b1, weight=0.5, group=1)], n_boot=300, n_perm=500)
    d0 = compute_metrics(b0)["miou"] - compute_metrics(a0)["miou"]
    d1 = compute_metrics(b1)["miou"] - compute_metrics(a1)["miou"]
    assert res.delta == pytest.approx((d0 + d1) / 2)
    assert res.ci_low < res.delta < res.ci_high and res.p_value < 0.01


def test_paired_needs_the_same_queries() -> None:
    a = _walked(n_queries=2, per_query=2, n_classes=1)
    b = [EpisodeRecord(r.episode_id, r.class_id, r.inter_fg, r.union_fg, r.inter_bg, r.union_bg, "other") for r in a]
    with pytest.raises(ValueError, match="different query images"):
        paired_test(a, b)
