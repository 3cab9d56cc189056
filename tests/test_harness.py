"""The harness for stochastic, stitched, multi-output methods (run identity, seeds, outputs,
capabilities, released checkpoints, the support-reliance control, provenance, stages)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fssbench.errors import UserError
from fssbench.results import git_revision, iter_results, load_result
from fssbench.executors.local import LocalExecutor
from fssbench.runner import DEFAULT_STAGES, SuiteRunner, filter_runs
from fssbench.suite import SuiteError, load_suite
from tests import toy  # noqa: F401  (registers toy methods, backbones and the toy dataset)

TRAIN = "{epochs: 1, episodes_per_epoch: 8, batch_size: 4, val_episodes: 4}"


def suite_file(tmp_path: Path, methods: str, *, matrix: str = "", eval_: str = "batch_size: 4", name: str = "h") -> Path:
    root = tmp_path / "toyroot"
    root.mkdir(exist_ok=True)
    text = f"""
    name: {name}
    matrix:
      methods: {methods}
      backbones: [toy-s]
      folds: [0]
      {matrix or "shots: [1]"}
    dataset: {{name: toy, root: {root}}}
    protocol: {{name: hsnet, img_size: 32}}
    episodes: 10
    train: {TRAIN}
    eval: {{{eval_}, device: cpu}}
    """
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def quiet(runner: SuiteRunner, runs) -> dict[str, int]:
    return runner.run(runs, on_event=lambda s: None)


# --- 1. run identity ------------------------------------------------------------------------------
def test_eval_options_change_the_run_id_never_the_decoder(tmp_path):
    s = load_suite(suite_file(tmp_path, "[{name: toy-stochastic, label: a}, {name: toy-stochastic, label: b, options: {noise: 2.0, samples: 3}},"
                              " {name: toy-stochastic, label: c, options: {hybrid_masking: true}}]"))
    runs = s.expand()
    a, b, c = runs
    assert a.decoder_id == b.decoder_id and a.run_id.rsplit("-", 1)[1] != b.run_id.rsplit("-", 1)[1]
    assert c.decoder_id != a.decoder_id  # hybrid_masking is a training option
    stats = quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), runs)
    assert stats["trained"] == 2 and stats["evaluated"] == 3


def test_dry_run_shows_each_runs_decoder_and_its_status(tmp_path, capsys):
    from fssbench.cli import main

    f = suite_file(tmp_path, "[{name: toy-stochastic, label: a}, {name: toy-stochastic, label: b, options: {noise: 2.0}}]")
    main(["run", str(f), "--dry-run", "--results-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    dec = load_suite(f).expand()[0].decoder_id
    assert out.count("to train") == 3 and "1 of 1 decoders to train" in out  # two rows + the summary
    s = load_suite(f)
    quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), filter_runs(s.expand(), "label=a"))
    main(["run", str(f), "--dry-run", "--results-dir", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert out.count("to train") == 1 and out.count("trained") >= 2 and "0 of 1 decoders to train" in out
    assert dec[:20] in out.replace("\n", "") or dec[:12] in out


# --- 2. randomness ----------------------------------------------------------------------------------
def _records(path: Path) -> list[dict]:
    return [r.to_dict() for r in load_result(path).records]


def test_stochastic_predictions_do_not_depend_on_batch_size_order_or_earlier_runs(tmp_path):
    methods = "[prototype, {name: toy-decoder}, {name: toy-stochastic}]"
    full = load_suite(suite_file(tmp_path, methods, eval_="batch_size: 4"))
    quiet(SuiteRunner(full, tmp_path / "all", executor=LocalExecutor()), full.expand())  # after two other runs, batch 4
    alone = load_suite(suite_file(tmp_path, methods, eval_="batch_size: 3", name="h"))
    target = filter_runs(alone.expand(), "method=toy-stochastic")
    quiet(SuiteRunner(alone, tmp_path / "alone", executor=LocalExecutor()), target)  # alone, batch 3
    rid = target[0].run_id
    assert rid in {r.run_id for r in full.expand()}  # batch size is not part of the identity
    a, b = _records(tmp_path / "all" / f"{rid}.json"), _records(tmp_path / "alone" / f"{rid}.json")
    # Pixel counts are identical. The float scalar may differ in its last bits: CPU conv kernels
    # round differently for another batch size (numerics, not randomness), hence approx there.
    strip = [{k: v for k, v in r.items() if k != "extras"} | {"extras": {k: v for k, v in r["extras"].items() if "." in k}} for r in a]
    assert strip == [{k: v for k, v in r.items() if k != "extras"} | {"extras": {k: v for k, v in r["extras"].items() if "." in k}} for r in b]
    assert [r["extras"]["pred_iou"] for r in a] == pytest.approx([r["extras"]["pred_iou"] for r in b], rel=1e-6)
    assert len({r["extras"]["pred_iou"] for r in a}) > 1


def test_sampling_seed_alone_changes_the_noise(tmp_path):
    s = load_suite(suite_file(tmp_path, "[toy-stochastic]", matrix="shots: [1]\n      seeds: {episodes: [0], train: [0], sampling: [0, 1]}"))
    runs = s.expand()
    assert len(runs) == 2 and runs[0].decoder_id == runs[1].decoder_id
    assert [r.config.seeds for r in runs] == [{"episodes": 0, "train": 0, "sampling": 0}, {"episodes": 0, "train": 0, "sampling": 1}]
    stats = quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), runs)
    assert stats["trained"] == 1
    a, b = (load_result(tmp_path / "r" / f"{r.run_id}.json") for r in runs)
    assert a.episode_hash == b.episode_hash
    assert [x.inter_fg for x in a.records] != [x.inter_fg for x in b.records] or a.metrics["miou"] != b.metrics["miou"]


def test_episode_generators_depend_only_on_seed_and_episode():
    from fssbench.episode import episode_generator

    x = torch.randn(3, generator=episode_generator(5, 17))
    assert torch.equal(x, torch.randn(3, generator=episode_generator(5, 17)))
    assert not torch.equal(x, torch.randn(3, generator=episode_generator(5, 18)))
    assert not torch.equal(x, torch.randn(3, generator=episode_generator(6, 17)))


def test_every_backbone_is_built_before_any_method_is_seeded(tmp_path):
    f = suite_file(tmp_path, "[toy-decoder]").read_text().replace("backbones: [toy-s]", "backbones: [{train: toy-s, eval: [toy-s, toy-m]}]")
    (tmp_path / "bb.yaml").write_text(f)
    s = load_suite(tmp_path / "bb.yaml")
    seen: list[list[str]] = []

    def spy(ctx) -> None:  # runs right before training: every backbone must exist already
        seen.append(sorted(ctx.workspace.built_backbones()))

    stages = list(DEFAULT_STAGES)
    stages.insert(stages.index(next(st for st in stages if st.__name__ == "train_and_evaluate")), spy)
    quiet(SuiteRunner(s, tmp_path / "r", stages=stages, executor=LocalExecutor()), s.expand())
    assert seen == [["toy-m", "toy-s"]]


# --- 3. richer predictions --------------------------------------------------------------------------
def test_mask_outputs_scalars_and_artefacts_land_in_the_records(tmp_path):
    s = load_suite(suite_file(tmp_path, "[toy-stochastic]", eval_="batch_size: 4, artefacts: 3"))
    quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), s.expand())
    (res,) = list(iter_results(tmp_path / "r"))
    rec = res.records[0]
    assert {"prior.inter_fg", "prior.union_fg", "prior.inter_bg", "prior.union_bg", "pred_iou"} <= set(rec.extras)
    assert rec.query and rec.query.startswith("c")
    prior = res.metrics["outputs"]["prior"]
    assert 0 <= prior["miou"] <= 100 and prior["miou_ci"][0] <= prior["miou"] <= prior["miou_ci"][1]
    arts = np.load(tmp_path / "r" / res.provenance["artefacts"])
    eps = {k.split("/")[0] for k in arts.files}
    assert len(eps) == 3 and {"query_image", "prediction", "out.prior", "out.noise"} <= {k.split("/")[1] for k in arts.files}


def test_undeclared_mask_output_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(toy.ToyStochastic, "mask_outputs", frozenset())
    s = load_suite(suite_file(tmp_path, "[toy-stochastic]"))
    with pytest.raises(ValueError, match="does not declare"):
        quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), s.expand())


def test_protocol_scores_probability_maps_like_scores():
    from fssbench.protocols import get_protocol

    ds = toy.ToyDataset(".")
    from fssbench.episodes import load_raw_episode, sample_episodes

    spec = sample_episodes(ds, 0, 1, 1, 0).episodes[0]
    ep = get_protocol("hsnet", img_size=32).prepare(load_raw_episode(ds, spec, 0, "mask"))
    prob = ep.query_mask.float() * 0.9 + 0.05
    rec = get_protocol("hsnet", img_size=32).score(prob, ep)
    assert rec.inter_fg == rec.union_fg > 0 and rec.query == spec.query


# --- 4. capabilities -----------------------------------------------------------------------------------
def test_kind_shot_pairs_and_per_kind_shot_ranges(tmp_path):
    f = suite_file(tmp_path, "[toy-stochastic]", matrix="kind_shots: [{kind: text, shots: [0]}, {kind: mask, shots: [1, 2]}]")
    (tmp_path / "t.yaml").write_text(f.read_text().replace("backbones: [toy-s]", "backbones: [toy-text]"))
    runs = load_suite(tmp_path / "t.yaml").expand()
    assert [(r.config.kind, r.config.shot) for r in runs] == [("text", 0), ("mask", 1), ("mask", 2)]
    for bad, why in (
        ("kind_shots: [{kind: text, shots: [1]}]", "1-shot text"),
        ("kind_shots: [{kind: mask, shots: [0]}]", "0-shot mask"),
    ):
        g = suite_file(tmp_path, "[toy-stochastic]", matrix=bad, name="bad")
        (tmp_path / "b.yaml").write_text(g.read_text().replace("backbones: [toy-s]", "backbones: [toy-text]"))
        with pytest.raises(SuiteError, match=why):
            load_suite(tmp_path / "b.yaml")


def test_text_supports_need_a_text_tower(tmp_path):
    f = suite_file(tmp_path, "[toy-stochastic]", matrix="kind_shots: [{kind: text, shots: [0]}]")
    with pytest.raises(SuiteError, match="text tower") as err:
        load_suite(f)
    assert len(str(err.value).splitlines()) == 1


# --- 8. provenance ----------------------------------------------------------------------------------------
def test_untracked_files_make_the_tree_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run([*git, "add", "a.txt"], check=True)
    subprocess.run([*git, "commit", "-qm", "a"], check=True)
    assert git_revision(repo)["dirty"] is False
    (repo / "new.py").write_text("x = 1")
    assert git_revision(repo)["dirty"] is True


def test_provenance_names_device_precision_weights_and_eval_options(tmp_path):
    s = load_suite(suite_file(tmp_path, "[toy-stochastic]"))
    quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), s.expand())
    (res,) = list(iter_results(tmp_path / "r"))
    p = res.provenance
    assert p["device"] == "cpu" and p["precision"] == "fp32" and p["autocast"] is None
    assert p["eval_options"] == {"noise": 0.5, "samples": 2}
    assert p["backbones"]["eval"]["name"] == "toy-s" and "sha256" in p["backbones"]["eval"]
    best = Path(res.decoder["checkpoint"])
    assert res.decoder["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()


def test_backbone_weights_are_hashed(tmp_path):
    from fssbench.work import backbone_provenance

    w = tmp_path / "w.pt"
    w.write_bytes(b"weights")
    bb = toy.ToyBackbone()
    bb.name, bb.weights_path = "toy-s", w
    assert backbone_provenance(bb)["sha256"] == hashlib.sha256(b"weights").hexdigest()


# --- 10. released checkpoints ----------------------------------------------------------------------------
def test_released_checkpoint_is_evaluated_without_training(tmp_path):
    s = load_suite(suite_file(tmp_path, "[toy-decoder]"))
    quiet(SuiteRunner(s, tmp_path / "trained", executor=LocalExecutor()), s.expand())
    (trained,) = list(iter_results(tmp_path / "trained"))
    ckpt = trained.decoder["checkpoint"]
    r = load_suite(suite_file(tmp_path, f"[{{name: toy-decoder, checkpoint: {ckpt}}}]", name="rel"))
    (run,) = r.expand()
    assert run.decoder_id is None and run.config.checkpoint == ckpt
    stats = quiet(SuiteRunner(r, tmp_path / "released", executor=LocalExecutor()), r.expand())
    assert stats["trained"] == 0
    (rel,) = list(iter_results(tmp_path / "released"))
    assert rel.metrics["miou"] == trained.metrics["miou"] and rel.decoder["released"] is True


def test_released_checkpoint_of_another_method_fails_before_any_work(tmp_path):
    s = load_suite(suite_file(tmp_path, "[toy-decoder]"))
    quiet(SuiteRunner(s, tmp_path / "trained", executor=LocalExecutor()), s.expand())
    ckpt = next(iter_results(tmp_path / "trained")).decoder["checkpoint"]
    r = load_suite(suite_file(tmp_path, f"[prototype, {{name: toy-stochastic, checkpoint: {ckpt}}}]", name="rel"))
    with pytest.raises(UserError, match="toy-decoder"):
        quiet(SuiteRunner(r, tmp_path / "released", executor=LocalExecutor()), r.expand())
    assert not list((tmp_path / "released").glob("*.json"))  # not even the prototype run was evaluated


def test_missing_released_checkpoint_is_a_suite_problem(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_suite(suite_file(tmp_path, "[{name: toy-decoder, checkpoint: /nope/best.pt}]"))


# --- 11. support-reliance control -----------------------------------------------------------------------
def test_other_class_supports_keep_queries_and_ids(tmp_path):
    from fssbench.controls import other_class_specs
    from fssbench.episodes import sample_episodes

    ds = toy.ToyDataset(".")
    specs = sample_episodes(ds, 0, 2, 12, 0).episodes
    ctl = other_class_specs(ds, specs, 0, seed=0)
    assert ctl == other_class_specs(ds, specs, 0, seed=0)
    for a, b in zip(specs, ctl):
        assert (a.episode_id, a.class_id, a.query) == (b.episode_id, b.class_id, b.query)
        assert b.support_class != a.class_id and len(b.supports) == 2
        assert all(n.startswith(f"c{b.support_class}_") for n in b.supports)  # toy names: c<class>_<i>


def test_support_control_runs_pair_with_the_real_runs(tmp_path):
    s = load_suite(suite_file(tmp_path, "[toy-colour]", matrix="shots: [1]\n      supports: [own, other-class]"))
    runs = s.expand()
    assert [r.config.supports for r in runs] == ["own", "other-class"]
    quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), runs)
    own, ctl = (load_result(tmp_path / "r" / f"{r.run_id}.json") for r in runs)
    assert [(x.episode_id, x.query) for x in own.records] == [(x.episode_id, x.query) for x in ctl.records]
    # toy-colour copies the support's colour: perfect with its own supports, blind with another class's
    # 10 episodes walk the query list through classes 1 and 2 only: 3 and 4 are empty, counted as 0
    assert own.metrics["empty_classes"] == [3, 4] and own.metrics["fold_classes"] == [1, 2, 3, 4]
    assert min(own.metrics["class_iou"][c] for c in ("1", "2")) > 90
    assert max(ctl.metrics["class_iou"][c] for c in ("1", "2")) < 5


# --- 12. stages -------------------------------------------------------------------------------------------
def test_a_stage_can_be_added_without_touching_planning(tmp_path):
    s = load_suite(suite_file(tmp_path, "[prototype]"))
    calls = []
    stages = [*DEFAULT_STAGES[:-1], lambda ctx: calls.append(len(ctx.plan.pending_evaluations)), DEFAULT_STAGES[-1]]
    stats = quiet(SuiteRunner(s, tmp_path / "r", stages=stages, executor=LocalExecutor()), s.expand())
    assert calls == [1] and stats["evaluated"] == 1


def test_only_matching_nothing_is_an_error(tmp_path):
    runs = load_suite(suite_file(tmp_path, "[prototype]")).expand()
    with pytest.raises(UserError, match="matches none"):
        filter_runs(runs, "method=protoype")
    with pytest.raises(UserError, match="matches none"):
        filter_runs(runs, "protoype")


def test_suite_types_are_checked(tmp_path):
    f = suite_file(tmp_path, "[prototype]")
    text = f.read_text().replace("epochs: 1", "epochs: ten").replace("img_size: 32", "img_size: big")
    f.write_text(text.replace("batch_size: 4,", "batch_size: x,"))
    with pytest.raises(SuiteError) as err:
        load_suite(f)
    msg = str(err.value)
    assert "'train.epochs' must be an integer" in msg and "'protocol.img_size' must be an integer" in msg
    assert "'eval.batch_size' must be an integer" in msg


def test_incompatible_stitch_is_an_explicit_cell(tmp_path):
    """HSNet's learner cannot be mapped onto a ViT: the run is written as an incompatible cell (no
    training, no numbers, the reason kept) and the report lists it."""
    from fssbench.report import write_report

    f = suite_file(tmp_path, "[prototype, hsnet]")
    f.write_text(f.read_text().replace("backbones: [toy-s]", "backbones: [{train: zoo-rn-s, eval: zoo-vit}]"))
    s = load_suite(f)
    stats = quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), s.expand())
    assert stats["trained"] == 0 and stats["evaluated"] == 2
    by_method = {r.config["method"]: r for r in iter_results(tmp_path / "r")}
    assert by_method["hsnet"].status == "incompatible" and "strides" in by_method["hsnet"].reason
    assert by_method["hsnet"].records == [] and by_method["prototype"].status == "ok"
    rep = write_report(tmp_path / "r", tmp_path / "rep", n_boot=50, n_perm=50, figures=False)
    text = (tmp_path / "rep" / "incompatible.md").read_text()
    assert "zoo-rn-s → zoo-vit" in text and "strides" in text and len(rep.suite.runs) == 1


def test_upgrade_table_pairs_before_after_and_retrained(tmp_path):
    """A 2 x 2 stitching matrix gives the Table 5 layout: before (A on A), after (A's decoder on B),
    their paired Δ, and B's re-trained decoder; values equal the runs' own mIoU."""
    from fssbench.report import write_report
    from fssbench.report.stitching import prior_iou_frame, plot_prior_iou, upgrade_frame

    f = suite_file(tmp_path, "[toy-stochastic]")
    f.write_text(f.read_text().replace(
        "backbones: [toy-s]", "backbones: [{train: toy-s, eval: [toy-s, toy-m]}, {train: toy-m, eval: [toy-m, toy-s]}]"))
    s = load_suite(f)
    quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), s.expand())
    runs = list(iter_results(tmp_path / "r"))
    miou = {(r.config["train_backbone"], r.config["eval_backbone"]): r.metrics["miou"] for r in runs}
    up = upgrade_frame(runs, n_boot=50, n_perm=50)
    assert len(up) == 2
    row = up[up.train_backbone == "toy-s"].iloc[0]
    assert row.eval_backbone == "toy-m" and row.upgrade == "scale-up"
    assert row.before == pytest.approx(miou[("toy-s", "toy-s")]) and row.after == pytest.approx(miou[("toy-s", "toy-m")])
    assert row.retrained == pytest.approx(miou[("toy-m", "toy-m")])
    assert row.delta == pytest.approx(row.after - row.before) and row.ci_lo <= row.delta <= row.ci_hi
    assert up[up.train_backbone == "toy-m"].iloc[0].upgrade == "scale-down (downgrade)"
    write_report(tmp_path / "r", tmp_path / "rep", n_boot=50, n_perm=50, figures=False)
    assert "toy-s → toy-m" in (tmp_path / "rep" / "upgrade.md").read_text()
    assert "evaluated on toy-m" in (tmp_path / "rep" / "stitched_vs_retrained.md").read_text()
    priors = prior_iou_frame(runs)
    assert set(priors.eval_backbone) == {"toy-s", "toy-m"} and len(priors) == 2 * 10  # one set per eval backbone
    fig = plot_prior_iou(priors)
    varied = sum(priors[priors.eval_backbone == b].iou.std() > 0 for b in ("toy-s", "toy-m"))
    assert len(fig.axes[0].lines) == varied  # one KDE per evaluation backbone whose IoUs vary
    legend = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert sorted(legend) == ["toy-m", "toy-s"]


def test_incompatible_cells_are_hatched_in_the_heatmap(tmp_path):
    from fssbench.report import load_suite as load_results, build_tables, compute_cells
    from fssbench.report.figures import plot_stitching

    f = suite_file(tmp_path, "[prototype, hsnet]")
    f.write_text(f.read_text().replace("backbones: [toy-s]", "backbones: [{train: zoo-rn-s, eval: [zoo-rn-s, zoo-clip-rn, zoo-vit]}]")
                 .replace("epochs: 1", "epochs: 0"))
    s = load_suite(f)
    quiet(SuiteRunner(s, tmp_path / "r", executor=LocalExecutor()), s.expand())
    res = load_results(tmp_path / "r")
    (t,) = build_tables(compute_cells(res.runs, n_boot=20))
    fig = plot_stitching(t, 1, res.incompatible)
    hsnet_ax = next(ax for ax in fig.axes if ax.get_title().startswith("hsnet"))
    assert any(x.get_text() == "incompatible" for x in hsnet_ax.texts)
    proto_ax = next(ax for ax in fig.axes if ax.get_title().startswith("prototype"))
    assert not any(x.get_text() == "incompatible" for x in proto_ax.texts)


def test_missing_backbone_weights_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.delenv("FSSBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no library caches either
    f = suite_file(tmp_path, "[prototype]")
    f.write_text(f.read_text().replace("backbones: [toy-s]", "backbones: [{train: in1k-rn50, eval: [in1k-rn50, clip-rn50]}]"))
    with pytest.raises(SuiteError) as err:
        load_suite(f)
    lines = str(err.value).splitlines()
    assert len(lines) == 2 and any("resnet50-0676ba61.pth" in x for x in lines) and any("RN50.pt" in x for x in lines)
    assert all("--weights-dir" in x for x in lines)
    load_suite(f, check_data=False)  # --dry-run needs no weights
