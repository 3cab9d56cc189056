"""Feature cache (``fssbench.backbones.cache``): exact (the same records with and without it) and
bounded by its documented policy."""

from __future__ import annotations

import torch

from fssbench.backbones.cache import FeatureCache, feature_cache
from fssbench.results import load_result
from fssbench.executors.local import LocalExecutor
from fssbench.runner import SuiteRunner
from fssbench.suite import load_suite
from tests import toy  # noqa: F401  (registers the toy methods and backbones)
from tests.test_harness import quiet, suite_file

MATRIX = "shots: [1]\n      backbones: [{train: toy-s, eval: [toy-s, toy-m]}, {train: toy-m, eval: [toy-m, toy-s]}]"


def _run(tmp_path, name: str, gb: float) -> dict:
    path = suite_file(tmp_path, "[toy-decoder, prototype]", matrix=MATRIX, eval_=f"batch_size: 4, feature_cache_gb: {gb}", name=name)
    text = path.read_text().replace("      backbones: [toy-s]\n", "")
    path.write_text(text)
    s = load_suite(path)
    quiet(SuiteRunner(s, tmp_path / name, workers=1, executor=LocalExecutor()), s.expand())
    return {f.stem: load_result(f) for f in (tmp_path / name).glob("*.json")}


def test_a_stitching_matrix_gives_identical_records_with_the_cache_and_reuses_features(tmp_path):
    on, off = _run(tmp_path, "cached", 1.0), _run(tmp_path, "uncached", 0.0)
    assert len(on) == len(off) == 8
    key = lambda r: (r.config["method"], r.config["train_backbone"], r.config["eval_backbone"])  # noqa: E731
    on_by, off_by = {key(r): r for r in on.values()}, {key(r): r for r in off.values()}
    assert on_by.keys() == off_by.keys()
    for k in on_by:
        assert [x.to_dict() for x in on_by[k].records] == [x.to_dict() for x in off_by[k].records], k
    hits = sum(r.provenance["feature_cache"]["hits"] for r in on.values())
    assert hits > 0 and all(r.provenance["feature_cache"]["hits"] == 0 for r in off.values())
    # the second evaluation of an evaluation backbone by the same method is all hits
    assert any(r.provenance["feature_cache"]["misses"] == 0 and r.provenance["feature_cache"]["hits"] > 0 for r in on.values())


class _B(torch.nn.Module):
    pass


def test_cache_policy_bound_eviction_and_copies():
    a, b = _B(), _B()
    x = torch.rand(2, 3, 8, 8)
    f = {"l": torch.ones(100)}  # 400 bytes
    c = FeatureCache(max_bytes=1000)
    k = FeatureCache.key(x, ["l"])
    assert k == FeatureCache.key(x.clone(), ["l"]) and k != FeatureCache.key(x + 1e-6, ["l"]) and k != FeatureCache.key(x, ["m"])
    c.put(a, k, f)
    got = c.get(a, k)
    got["l"].zero_()  # a method changing its features in place does not change the cache
    assert torch.equal(c.get(a, k)["l"], torch.ones(100)) and c.get(b, k) is None
    k2 = FeatureCache.key(x + 1, ["l"])
    c.put(a, k2, f)
    c.put(a, FeatureCache.key(x + 2, ["l"]), f)  # does not fit, and a's own entries are never evicted
    assert c.nbytes == 800 and c.stats.stored == 2
    c.put(b, k, f)  # b's entry evicts a (the least recently used other backbone)
    assert c.get(a, k) is None and c.get(b, k) is not None and c.nbytes == 400
    off = FeatureCache(max_bytes=0)
    off.put(a, k, f)
    assert off.get(a, k) is None and off.stats.stored == 0


def test_backbone_calls_go_through_the_active_cache():
    from fssbench.backbones import create_backbone

    bb = create_backbone("toy-s")
    x = torch.rand(2, 3, 32, 32)
    c = FeatureCache(max_bytes=2**30)
    with feature_cache(c):
        first = bb(x)
        again = bb(x)
    assert c.stats.misses == 1 and c.stats.hits == 1 and c.stats.backbone_seconds > 0
    assert all(torch.equal(first[k], again[k]) for k in first)
    bb(x)  # outside the block: no cache
    assert c.stats.hits == 1
