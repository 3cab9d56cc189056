"""DiffUp through the suite runner: one tiny decoder trained once on the toy dataset, then evaluated
with other evaluation options and stitched onto another backbone, all from the one decoder."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

import pytest
import torch

from fssbench.results import iter_results
from fssbench.executors.local import LocalExecutor
from fssbench.runner import SuiteRunner
from fssbench.suite import SuiteError, load_suite
from tests import toy  # noqa: F401  (registers the toy dataset and backbones)

OPTS = "width: 4, prior_size: 16, timesteps: 20, sampling_steps: 3, ensemble: 2, augment: 1, prediction: sample"


pytestmark = pytest.mark.usefixtures("one_thread")


def _suite(tmp_path: Path, methods: str, backbones: str = "[{train: toy-s, eval: [toy-s, toy-m]}]") -> Path:
    root = tmp_path / "toyroot"
    root.mkdir(exist_ok=True)
    text = f"""
    name: du
    matrix:
      methods: {methods}
      backbones: {backbones}
      folds: [0]
      shots: [1]
      kinds: [mask]
    dataset: {{name: toy, root: {root}}}
    protocol: {{name: hsnet, img_size: 32}}
    episodes: 6
    train: {{epochs: 1, episodes_per_epoch: 8, batch_size: 4, val_episodes: 4}}
    eval: {{batch_size: 4, device: cpu}}
    """
    path = tmp_path / "du.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_diffup_trains_once_and_serves_eval_options_and_stitching(tmp_path):
    methods = (
        f"[{{name: diffup, label: a, options: {{{OPTS}}}}},"
        f" {{name: diffup, label: b, options: {{{OPTS}, sampling_steps: 2, ensemble: 1, transform: l2:exp}}}}]"
    )
    suite = load_suite(_suite(tmp_path, methods))
    runs = suite.expand()
    assert len(runs) == 4 and len({r.decoder_id for r in runs}) == 1  # eval options never re-train
    stats = SuiteRunner(suite, tmp_path / "r", executor=LocalExecutor()).run(runs, on_event=lambda s: None)
    assert stats["trained"] == 1 and stats["evaluated"] == 4
    (dec,) = list((tmp_path / "r" / "decoders").iterdir())
    rows = list(csv.DictReader(open(dec / "log.csv")))
    assert len(rows) == 1 and float(rows[0]["val_miou"]) >= 0
    results = list(iter_results(tmp_path / "r"))
    assert {(r.config["label"], r.config["eval_backbone"]) for r in results} == {
        ("a", "toy-s"), ("a", "toy-m"), ("b", "toy-s"), ("b", "toy-m")
    }
    for res in results:
        assert res.metrics["n_episodes"] == 6 and "prior" in res.metrics["outputs"]
        assert all("pred_iou" in rec.extras and "prior.inter_fg" in rec.extras for rec in res.records)
    by = {(r.config["label"], r.config["eval_backbone"]): r for r in results}
    assert [x.inter_fg for x in by["a", "toy-s"].records] != [x.inter_fg for x in by["a", "toy-m"].records] or (
        [x.extras["prior.inter_fg"] for x in by["a", "toy-s"].records] != [x.extras["prior.inter_fg"] for x in by["a", "toy-m"].records]
    )


def test_lfe_decoders_are_refused_for_stitching_before_any_work(tmp_path):
    with pytest.raises(SuiteError, match="lfe"):
        load_suite(_suite(tmp_path, f"[{{name: diffup, options: {{{OPTS}, lfe: true}}}}]"))
    same = load_suite(_suite(tmp_path, f"[{{name: diffup, options: {{{OPTS}, lfe: true}}}}]", backbones="[toy-s]"))
    assert len(same.expand()) == 1
