"""Run ids, decoder ids and run configurations are what finished results are found by (and what the
committed baselines in ``results/baselines/`` are keyed on): a refactor of the suite must leave
every one of them unchanged, byte for byte. The values below were computed on main before the suite
was split into schema / expansion / validation (a change to a suite file changes them, rightly)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from fssbench.suite import load_suite

SUITES = Path(__file__).resolve().parents[1] / "suites"

SMOKE_QUICK = [
    ("prototype-zoo-rn-s-f0-1shot-mask-s0-2d97e6341f", None),
    ("prototype-zoo-rn-s-f0-1shot-mask-other-class-s0-33998d4793", None),
    ("prototype-zoo-rn-s-f0-5shot-mask-s0-c5f75e6332", None),
    ("hm-zoo-rn-s-f0-5shot-mask-se0t2s0-f93a6fb019", "hm-zoo-rn-s-f0-s2-69b89e8725"),
    ("hm-zoo-rn-s-f0-5shot-mask-other-class-se0t2s0-c534dfcc4e", "hm-zoo-rn-s-f0-s2-69b89e8725"),
]

DIGESTS = {
    # suite:profile -> (runs, sha256 of [[run_id, decoder_id, config, train_config], ...] as JSON)
    "ablation.yaml:None": (10, "f01a5e930c95e86f"),
    "ablation.yaml:paper": (10, "a1051c16a59f81fa"),
    "ablation.yaml:quick": (10, "f01a5e930c95e86f"),
    "annotation_types.yaml:None": (11, "b640a334683f822e"),
    "annotation_types.yaml:paper": (44, "157784e76b297b1c"),
    "annotation_types.yaml:quick": (11, "b640a334683f822e"),
    "backbone_upgrade.yaml:None": (44, "2bff4c7d19b9395b"),
    "backbone_upgrade.yaml:ci": (6, "59d2aad46d3321b6"),
    "backbone_upgrade.yaml:full": (48, "9b6b3d70c64947ec"),
    "backbone_upgrade.yaml:paper": (108, "898283f0541ac54b"),
    "backbone_upgrade.yaml:quick": (44, "2bff4c7d19b9395b"),
    "diffss_aug.yaml:None": (16, "4d6378057b711785"),
    "diffss_aug.yaml:paper": (64, "47697fff0dbb83cc"),
    "diffss_aug.yaml:quick": (16, "4d6378057b711785"),
    "kshot.yaml:None": (84, "420e1274283964a5"),
    "kshot.yaml:paper": (80, "4c1481f81b9e90f0"),
    "kshot.yaml:quick": (84, "420e1274283964a5"),
    "smoke.yaml:None": (20, "4b665fff259aa366"),
    "smoke.yaml:paper": (48, "b023c73919b9ed29"),
    "smoke.yaml:quick": (20, "4b665fff259aa366"),
    "smoke.yaml:tiny": (12, "1483d08cdc5c2438"),
    "transform_fn.yaml:None": (10, "325b6e7de1b53e4e"),
    "transform_fn.yaml:paper": (10, "02fb7a699a3f7ca2"),
    "transform_fn.yaml:quick": (10, "325b6e7de1b53e4e"),
    "zoo_proof.yaml:None": (32, "43c8c92bf3aa90bf"),
}


def _rows(suite) -> list[list]:
    """What a result file and a decoder folder are keyed on, in the JSON form they are written in."""
    return [[r.run_id, r.decoder_id, r.config.as_dict(), r.train_config] for r in suite.expand()]


def test_smoke_run_ids_are_pinned() -> None:
    runs = load_suite(SUITES / "smoke.yaml", "quick", check_data=False).expand()
    got = [(r.run_id, r.decoder_id) for r in runs]
    assert got[:3] + got[-2:] == SMOKE_QUICK


@pytest.mark.parametrize("key", sorted(DIGESTS))
def test_every_suite_expands_to_the_same_runs(key: str) -> None:
    name, profile = key.split(":")
    doc = yaml.safe_load((SUITES / name).read_text())
    assert profile == "None" or profile in (doc.get("profiles") or {})
    rows = _rows(load_suite(SUITES / name, None if profile == "None" else profile, check_data=False))
    assert (len(rows), hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]) == DIGESTS[key]


def test_the_digests_cover_every_suite_and_profile() -> None:
    keys = set()
    for f in sorted(SUITES.glob("*.yaml")):
        doc = yaml.safe_load(f.read_text())
        keys |= {f"{f.name}:{p}" for p in [None, *(doc.get("profiles") or {})]}
    assert keys == set(DIGESTS)
