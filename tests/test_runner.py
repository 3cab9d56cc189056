"""Suite loading, expansion, the runner end to end, and crash safety (SIGKILL mid-suite)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fssbench.errors import UserError
from fssbench.results import iter_results
from fssbench.executors.local import LocalExecutor
from fssbench.runner import SuiteRunner, filter_runs
from fssbench.workspace import Workspace
from fssbench.suite import SuiteError, load_suite
from tests import toy  # noqa: F401  (registers toy-s, toy-m, toy-decoder)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from fssbench.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, size="small", force=True, show_progress=False)
    return root


def write_suite(path: Path, root: Path, **over: str) -> Path:
    text = f"""
    name: {over.get('name', 'toy')}
    matrix:
      methods: [prototype, {{name: toy-decoder, train: {{epochs: 2, episodes_per_epoch: 8, batch_size: 4, val_episodes: 6}}}}]
      backbones: [{{train: toy-s, eval: [toy-s, toy-m]}}]
      folds: {over.get('folds', '[0, 1]')}
      shots: [1, 2]
      kinds: [mask]
      seeds: [0]
    dataset: {{name: pascal, root: {root}}}
    protocol: {{name: hsnet, img_size: 48}}
    episodes: {over.get('episodes', '12')}
    eval: {{batch_size: 4, device: cpu}}
    """
    path.write_text(textwrap.dedent(text))
    return path


def test_bad_suite_reports_every_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent(
            """
            name: bad
            colour: blue
            matrix:
              methods: [prototype, nosuchmethod, {name: hsnet, options: {nope: 1}}]
              backbones: [toy-s, nosuchbackbone]
              folds: [0, "one"]
              shots: [1]
              kinds: [mask, crayon]
            dataset: {name: pascal, root: /does/not/exist}
            """
        )
    )
    with pytest.raises(SuiteError) as err:
        load_suite(bad)
    lines = str(err.value).splitlines()
    text = "\n".join(lines)
    assert "unknown key 'colour'" in text
    assert "matrix.folds" in text
    assert "unknown annotation kind 'crayon'" in text
    assert len(lines) >= 3 and all(line.startswith(str(bad)) for line in lines)


def test_registry_problems_are_listed(tmp_path, synth_root):
    bad = tmp_path / "bad2.yaml"
    bad.write_text(
        textwrap.dedent(
            f"""
            name: bad2
            matrix:
              methods: [prototype, nosuchmethod, {{name: prototype, label: p2, options: {{nope: 1}}}}]
              backbones: [toy-s, nosuchbackbone]
              folds: [0, 7]
            dataset: {{name: pascal, root: {synth_root}}}
            """
        )
    )
    with pytest.raises(SuiteError) as err:
        load_suite(bad)
    text = str(err.value)
    for needle in ("unknown method 'nosuchmethod'", "no option(s) nope", "unknown backbone 'nosuchbackbone'", "fold 7 is out of range"):
        assert needle in text


def test_missing_root_and_bad_yaml(tmp_path):
    s = write_suite(tmp_path / "s.yaml", tmp_path / "nope")
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(s)
    (tmp_path / "y.yaml").write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_suite(tmp_path / "y.yaml")


def test_expand_ids_stable_and_decoders_shared(tmp_path, synth_root):
    suite = load_suite(write_suite(tmp_path / "s.yaml", synth_root))
    runs = suite.expand()
    # 2 methods x 2 eval backbones x 2 folds x 2 shots
    assert len(runs) == 16 and len({r.run_id for r in runs}) == 16
    assert [r.run_id for r in runs] == [r.run_id for r in load_suite(tmp_path / "s.yaml").expand()]
    decoders = {r.decoder_id for r in runs if r.decoder_id}
    assert len(decoders) == 2  # one per fold, shared by shots and eval backbones
    assert len(filter_runs(runs, "method=prototype,fold=1")) == 4
    with pytest.raises(UserError, match="unknown key"):
        filter_runs(runs, "colour=red")


def test_run_ids_ignore_label_and_order(tmp_path, synth_root):
    """Relabelling or reordering a suite's methods keeps finished runs (same ids); the order is
    recorded as ``method_rank`` for reports."""
    text = """
    name: order
    matrix: {methods: [%s], backbones: [toy-s], folds: [0], shots: [1], kinds: [mask], seeds: [0]}
    dataset: {name: pascal, root: %s}
    """
    hm = "{name: prototype, label: proto-hm, options: {hybrid_masking: true}}"
    got = []
    for methods in (f"prototype, {hm}", f"{hm}, {{name: prototype, label: floor}}"):
        (tmp_path / "s.yaml").write_text(text % (methods, synth_root))
        runs = load_suite(tmp_path / "s.yaml").expand()
        got.append({r.config.method_options["hybrid_masking"]: (r.run_id.rsplit("-", 1)[1], r.config.method_rank) for r in runs})
    assert got[0][True][0] == got[1][True][0] and got[0][False][0] == got[1][False][0]
    assert (got[0][False][1], got[0][True][1]) == (0, 1) and (got[1][True][1], got[1][False][1]) == (0, 1)


def test_run_end_to_end_and_skip(tmp_path, synth_root):
    suite = load_suite(write_suite(tmp_path / "s.yaml", synth_root, folds="[0]"))
    runner = SuiteRunner(suite, tmp_path / "results", device="cpu", executor=LocalExecutor())
    stats = runner.run(suite.expand(), on_event=lambda s: None)
    assert stats == {"total": 8, "skipped": 0, "trained": 1, "evaluated": 8}
    results = list(iter_results(tmp_path / "results"))
    assert len(results) == 8
    r = results[0]
    assert len(r.records) == 12 and r.episode_hash and r.provenance["torch"]
    assert 0.0 <= r.metrics["miou"] <= 100.0 and r.metrics["miou_ci"][0] <= r.metrics["miou"] <= r.metrics["miou_ci"][1]
    # same (fold, shot, seed) => same episodes for every method and backbone
    by_cell = {}
    for res in results:
        by_cell.setdefault((res.config["fold"], res.config["shot"]), set()).add(res.episode_hash)
    assert all(len(h) == 1 for h in by_cell.values())
    log = (tmp_path / "results" / "decoders").glob("*/log.csv")
    assert len(next(log).read_text().strip().splitlines()) == 3  # header + 2 epochs
    again = runner.run(suite.expand(), on_event=lambda s: None)
    assert again["skipped"] == 8 and again["evaluated"] == 0 and again["trained"] == 0


def test_same_seed_same_numbers(tmp_path, synth_root):
    s = write_suite(tmp_path / "s.yaml", synth_root, folds="[1]")
    out = []
    for name in ("a", "b"):
        suite = load_suite(s)
        runs = filter_runs(suite.expand(), "method=toy-decoder,shot=1,eval_backbone=toy-s")
        SuiteRunner(suite, tmp_path / name, device="cpu", executor=LocalExecutor()).run(runs, on_event=lambda s: None)
        out.append([(r.metrics["miou"], r.metrics["fbiou"]) for r in iter_results(tmp_path / name)])
    assert out[0] == out[1]


def test_method_init_does_not_depend_on_earlier_runs(tmp_path, synth_root):
    """A decoder trained after another one in the same process starts from the same weights as one
    trained alone (building a backbone draws from the RNG; an earlier run may have built it)."""
    suite = load_suite(write_suite(tmp_path / "s.yaml", synth_root, folds="[1]"))
    run = filter_runs(suite.expand(), "method=toy-decoder,shot=1,eval_backbone=toy-s")[0]
    fresh = Workspace(suite, tmp_path / "a", torch.device("cpu")).make_method(run, "toy-s")
    warm = Workspace(suite, tmp_path / "b", torch.device("cpu"))
    warm.backbone("toy-s")
    warm.backbone("toy-m")
    again = warm.make_method(run, "toy-s")
    a, b = fresh.trainable_state(), again.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_results_of_other_suite_versions_are_named(tmp_path, synth_root):
    suite = load_suite(write_suite(tmp_path / "s.yaml", synth_root, folds="[0]"))
    runs = suite.expand()
    runner = SuiteRunner(suite, tmp_path / "results", device="cpu", executor=LocalExecutor())
    assert runner.foreign_results(runs) == []  # no folder yet
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / f"{runs[0].run_id}.json").write_text("{}")
    stale = tmp_path / "results" / "prototype-old-f0-1shot-mask-s0-0123456789.json"
    stale.write_text("{}")
    (tmp_path / "results" / ".tmp-partial.json").write_text("")
    assert runner.foreign_results(runs) == [stale]


def test_resumed_training_reports_progress_from_the_checkpoint(tmp_path):
    from fssbench.engine.train import train
    from fssbench.methods import TrainConfig, create_method
    from fssbench.protocols import get_protocol

    data, proto = toy.ToyDataset(tmp_path), get_protocol("hsnet", img_size=32)
    method = create_method("toy-decoder", toy.ToyBackbone())
    steps: list[int] = []
    for epochs in (2, 3):  # the second call resumes after epoch 2
        steps.clear()
        cfg = TrainConfig(epochs=epochs, episodes_per_epoch=6, batch_size=3, val_episodes=4)
        summary = train(method, data, 0, proto, cfg, tmp_path / "dec", val_episodes=4, on_step=steps.append)
    assert summary.resumed_from == 2
    assert steps == [12, 3, 3] and sum(steps) == 3 * 6


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_sigkill_mid_suite_resumes_without_recomputing(tmp_path, synth_root):
    suite_file = write_suite(tmp_path / "s.yaml", synth_root, folds="[0, 1]", episodes="40")
    results = tmp_path / "results"
    script = (
        "import sys; from tests import toy; from fssbench.cli import main; "
        f"main(['run', {str(suite_file)!r}, '--results-dir', {str(results)!r}, '--device', 'cpu'])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(results.glob("*.json"))) < 3:
        time.sleep(0.05)
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # its forked workers end with it (PR_SET_PDEATHSIG), instead of waiting for tasks forever
    deadline = time.time() + 20
    while time.time() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    assert children and not any(_alive(c) for c in children), "workers outlived the killed run"
    finished = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert 0 < len(finished) < 16, "kill should land mid-suite"
    for p in results.glob("*.json"):
        json.loads(p.read_text())  # nothing half-written under a result name
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    final = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert len(final) == 16
    assert all(final[name] == mtime for name, mtime in finished.items()), "finished runs were recomputed"
