"""Executors (``fssbench.executors``): the task graph, and ``local``, ``ray`` and ``slurm`` (submitit's
local executor) writing identical result files for the smoke suite (its ``tiny`` profile: the
quick profile's methods and controls, trained and sharded, in seconds); killed mid-suite and started
again, a Ray or submitit run loses no finished run and recomputes none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fssbench.errors import UserError
from fssbench.executors import get_executor
from fssbench.executors.graph import build_graph
from fssbench.plan import make_plan
from fssbench.resources import Resources, check_resources, parse_resources, resources_for
from fssbench.results import load_result
from fssbench.executors.local import LocalExecutor
from fssbench.runner import SuiteRunner
from fssbench.suite import load_suite
from fssbench.workers import can_fork

REPO = Path(__file__).resolve().parents[1]
FSSBENCH = [sys.executable, "-m", "fssbench.cli"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """suites/smoke.yaml with its tiny profile's world in a temporary folder (generated once)."""
    tmp = tmp_path_factory.mktemp("executors")
    doc = yaml.safe_load((REPO / "suites" / "smoke.yaml").read_text())
    doc["profiles"]["tiny"]["dataset"]["root"] = str(tmp / "synth-small")
    doc["profiles"]["tiny"]["matrix"]["shots"] = [1]  # 6 runs (3 methods x own/other-class supports)
    path = tmp / "smoke.yaml"
    path.write_text(yaml.safe_dump(doc))
    from fssbench.synth import generate

    generate(tmp / "synth-small", seed=0, size="small", force=True, show_progress=False)
    return path


def _records(out: Path) -> dict[str, tuple]:
    """Per run: its records and metrics (what must be identical across executors)."""
    got = {}
    for f in sorted(out.glob("*.json")):
        r = load_result(f)
        got[r.run_id] = ([x.to_dict() for x in r.records], json.dumps(r.metrics, sort_keys=True))
    return got


def _quiet_run(suite_path: Path, out: Path, executor: str, **opts) -> dict[str, int]:
    from fssbench.console import console

    s = load_suite(suite_path, "tiny")
    runner = SuiteRunner(s, out, device="cpu", workers=2, executor=get_executor(executor, **opts))
    with console.capture():
        return runner.run(s.expand(), on_event=lambda m: None)


# --- the graph ------------------------------------------------------------------------------------
def test_graph_has_one_training_per_decoder_and_evaluations_after_it(tiny, tmp_path):
    s = load_suite(tiny, "tiny")
    runs = s.expand()
    plan = make_plan(runs, tmp_path)
    g = build_graph(plan, lambda r: 2, lambda r, i, n: False, parse_resources({"train": {"gpus": 2, "time_min": 600}}, []), {"partition": "a100"})
    trains = [t for t in g if t.kind == "train"]
    assert sorted(t.decoder_id for t in trains) == sorted({r.decoder_id for r in runs if r.decoder_id})
    evals = [t for t in g if t.kind == "eval"]
    assert len(evals) == 2 * len(runs) and all(t.part in ((0, 2), (1, 2)) for t in evals)
    for t in evals:
        assert t.deps == ((f"train:{t.run.decoder_id}",) if t.run.decoder_id else ())
    assert trains[0].resources == Resources(cpus=1, gpus=2, time_min=600, partition="a100")
    assert evals[0].resources.gpus == 0 and evals[0].resources.partition == "a100"
    order = [t.task_id for t in g.order()]
    assert all(order.index(d) < order.index(t.task_id) for t in g for d in t.deps)
    # a finished decoder is no task, and its evaluations wait on nothing
    (tmp_path / "decoders" / trains[0].decoder_id).mkdir(parents=True)
    (tmp_path / "decoders" / trains[0].decoder_id / "decoder.json").write_text("{}")
    g2 = build_graph(make_plan(runs, tmp_path), lambda r: 1, lambda r, i, n: False)
    assert f"train:{trains[0].decoder_id}" not in {t.task_id for t in g2}
    assert all(not t.deps for t in g2 if t.decoder_id == trains[0].decoder_id)


def test_bad_resources_are_one_line_each():
    problems = check_resources({"train": {"gpus": -1, "ram": 3}, "evaluate": {}, "eval": {"partition": 5}})
    assert problems == [
        "'resources.train.gpus' must be a whole number >= 0, got -1",
        "unknown key 'resources.train.ram' (valid: cpus, gpus, mem_gb, time_min, partition, account, qos, constraint)",
        "unknown key 'resources.evaluate' (valid: train, eval)",
        "'resources.eval.partition' must be a string, got 5",
    ]
    with pytest.raises(UserError, match="unknown resource"):
        resources_for("train", {}, {"disk": 3})
    with pytest.raises(UserError, match="unknown executor 'k8s'; use local, ray, slurm"):
        get_executor("k8s")


# --- identical results ------------------------------------------------------------------------------
@pytest.mark.skipif(not can_fork(), reason="the local executor's workers fork (Linux)")
def test_local_ray_and_slurm_write_identical_results(tiny, tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("submitit")
    stats = {}
    for name, opts in (("local", {}), ("ray", {"num_cpus": 2}), ("slurm", {"cluster": "local"})):
        stats[name] = _quiet_run(tiny, tmp_path / name, name, **opts)
    assert stats["local"] == stats["ray"] == stats["slurm"] == {"total": 6, "skipped": 0, "trained": 2, "evaluated": 6}
    local = _records(tmp_path / "local")
    assert len(local) == 6 and all(recs for recs, _ in local.values())
    assert _records(tmp_path / "ray") == local
    assert _records(tmp_path / "slurm") == local
    for name in ("ray", "slurm"):  # the same decoders, bit for bit
        for f in (tmp_path / "local" / "decoders").glob("*/best.pt"):
            other = tmp_path / name / "decoders" / f.parent.name / "best.pt"
            from fssbench.results import sha256_file

            assert sha256_file(other) == sha256_file(f)


# --- kill and resume --------------------------------------------------------------------------------
def _finished(out: Path) -> dict[str, int]:
    return {f.name: f.stat().st_mtime_ns for f in out.glob("*.json")}


@pytest.mark.parametrize("executor", ["ray", "slurm"])
def test_a_killed_cluster_run_keeps_its_finished_runs_and_recomputes_none(tiny, tmp_path, executor):
    pytest.importorskip("ray" if executor == "ray" else "submitit")
    out = tmp_path / "r"
    extra = ["--cluster", "local"] if executor == "slurm" else []
    cmd = [*FSSBENCH, "run", str(tiny), "-p", "tiny", "--results-dir", str(out), "--device", "cpu", "--workers", "2",
           "--executor", executor, *extra]
    env = os.environ | {"COLUMNS": "200"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.time() + 300
    while len(_finished(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
    proc.wait()
    time.sleep(1.0)
    before = _finished(out)
    assert 2 <= len(before) < 6, before
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    after = _finished(out)
    assert len(after) == 6
    assert {k: after[k] for k in before} == before  # no finished run was written again
    assert f"{6 - len(before)} evaluated, {len(before)} already done" in done.stdout


def test_slurm_dry_run_prints_the_job_scripts(tiny, tmp_path):
    pytest.importorskip("submitit")
    out = subprocess.run(
        [*FSSBENCH, "run", str(tiny), "-p", "tiny", "--results-dir", str(tmp_path / "r"), "--executor", "slurm", "--dry-run",
         "--partition", "gpu", "--gpus-per-task", "1", "--time-min", "90", "--mem-gb", "16"],
        capture_output=True, text=True, env=os.environ | {"COLUMNS": "250"},
    )
    assert out.returncode == 0, out.stderr
    scripts = out.stdout.split("# task ")[1:]
    assert len(scripts) == 2 + 6 * 2  # two trainings, six runs in two shards each
    first = scripts[0]
    assert first.startswith("train:") and "#SBATCH --partition=gpu" in first and "#SBATCH --gpus-per-node=1" in first
    assert "#SBATCH --time=90" in first and "#SBATCH --mem=16384MB" in first
    assert "-m fssbench.executors.task" in first and "--task train:" in first
    assert any("(after train:" in s for s in scripts)
    assert "14 job(s) would be submitted (nothing was submitted)" in out.stdout
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("*.json"))


def test_a_bad_executor_is_one_line_and_exit_2(tiny, tmp_path):
    out = subprocess.run([*FSSBENCH, "run", str(tiny), "-p", "tiny", "--executor", "k8s"], capture_output=True, text=True)
    assert out.returncode != 0 and "unknown executor 'k8s'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not can_fork(), reason="the local executor's workers fork (Linux)")
def test_a_training_that_asks_for_several_gpus_runs_ddp_under_torchrun(tiny, tmp_path):
    # on the CPU each requested "GPU" is a gloo process: the launch path a multi-GPU node takes
    from fssbench.console import console

    s = load_suite(tiny, "tiny")
    runs = [r for r in s.expand() if r.config.method == "hsnet" and r.config.supports == "own"]
    runner = SuiteRunner(s, tmp_path / "r", device="cpu", workers=2, resources={"gpus": 2}, executor=LocalExecutor())
    said: list[str] = []
    with console.capture():
        stats = runner.run(runs, on_event=said.append)
    assert stats["trained"] == 1 and stats["evaluated"] == 1
    meta = json.loads(next((tmp_path / "r" / "decoders").glob("*/decoder.json")).read_text())
    assert meta["environment"]["world_size"] == 2
    assert any("DDP: 2 processes under torchrun" in m for m in said) and any(m.startswith("trained hsnet") for m in said)


def test_slurm_without_sbatch_is_one_line(tiny, tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import shutil

    if shutil.which("sbatch"):
        pytest.skip("this machine has sbatch")
    out = subprocess.run([*FSSBENCH, "run", str(tiny), "-p", "tiny", "--results-dir", str(tmp_path / "r"), "--executor", "slurm"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no sbatch on this machine" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "r").exists()  # before any work
