import json
import subprocess
import sys

import pytest

from fssbench.episodes import EpisodeList, sample_episodes
from fssbench.errors import UserError
from tests.toy import ToyDataset


def test_same_seed_same_episodes_and_hash(tmp_path):
    ds = ToyDataset()
    a = sample_episodes(ds, 0, 2, 30, seed=3)
    b = sample_episodes(ds, 0, 2, 30, seed=3)
    assert a.episodes == b.episodes and a.hash == b.hash
    a.save(tmp_path / "a.json")
    b.save(tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    c = sample_episodes(ds, 0, 2, 30, seed=4)
    assert c.hash != a.hash


def test_query_cycle_rule_and_supports_valid():
    ds = ToyDataset()
    lst = sample_episodes(ds, 1, 3, 40, seed=0)
    entries = ds.entries(1, "val")
    for i, spec in enumerate(lst.episodes):
        assert (spec.query, spec.class_id) == (entries[i % len(entries)].name, entries[i % len(entries)].class_id)
        assert spec.query not in spec.supports
        assert len(set(spec.supports)) == 3
        assert all(s.startswith(f"c{spec.class_id}_") for s in spec.supports)
        assert spec.class_id in ds.fold_classes(1)


def test_class_uniform_and_zero_shot():
    ds = ToyDataset()
    lst = sample_episodes(ds, 0, 0, 50, seed=1, sampling="class_uniform")
    assert all(s.supports == () for s in lst.episodes)
    assert {s.class_id for s in lst.episodes} == set(ds.fold_classes(0))


def test_too_few_images_is_a_user_error():
    with pytest.raises(UserError, match="need 7 images per class"):
        sample_episodes(ToyDataset(n_per_class=4), 0, 6, 10, seed=0)


def test_load_rejects_tampered_file(tmp_path):
    lst = sample_episodes(ToyDataset(), 0, 1, 5, seed=0)
    path = lst.save(tmp_path / "e.json")
    assert EpisodeList.load(path).episodes == lst.episodes
    doc = json.loads(path.read_text())
    doc["episodes"][0]["query"] = "c1_5"
    path.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="content hash"):
        EpisodeList.load(path)


def test_determinism_across_processes():
    code = (
        "from tests.toy import ToyDataset; from fssbench.episodes import sample_episodes;"
        "print(sample_episodes(ToyDataset(), 0, 2, 25, seed=11).hash)"
    )
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)}
    assert len(outs) == 1
    assert outs.pop().strip() == sample_episodes(ToyDataset(), 0, 2, 25, seed=11).hash
