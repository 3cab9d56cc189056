"""The shipped suites: every profile parses and expands; the backbone-upgrade suite covers what the
DiffUp issue asks of it; paper profiles fail before any work, one line per missing file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fssbench.cli import main
from fssbench.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted((ROOT / "suites").glob("*.yaml"))
UPGRADE = ROOT / "suites" / "backbone_upgrade.yaml"
DIFFSS = ROOT / "suites" / "diffss_aug.yaml"
ZOO = ["zoo-rn-s", "zoo-rn-m", "zoo-vit", "zoo-clip-rn"]


def _profiles(path: Path) -> list[str]:
    return sorted((yaml.safe_load(path.read_text()).get("profiles") or {}).keys())


@pytest.mark.parametrize("path,profile", [(p, pr) for p in SUITES for pr in _profiles(p)], ids=lambda x: getattr(x, "stem", x))
def test_every_profile_of_every_suite_expands(path, profile):
    runs = load_suite(path, profile, check_data=False).expand()
    assert runs and len({r.run_id for r in runs}) == len(runs)


def _pairs(runs, method):
    return {(r.config.train_backbone, r.config.eval_backbone) for r in runs if r.config.method == method}


def test_backbone_upgrade_quick_is_the_full_zoo_matrix_for_every_method():
    runs = load_suite(UPGRADE, "quick", check_data=False).expand()
    full = {(a, b) for a in ZOO for b in ZOO}
    for m in ("diffup", "prototype"):
        assert _pairs(runs, m) == full, m
    # HSNet: every row but zoo-vit's (its ViT training does not fit the budget; the suite says so)
    assert _pairs(runs, "hsnet") == {p for p in full if p[0] != "zoo-vit"}
    assert {r.config.shot for r in runs} == {1}
    # the paper's three upgrade kinds start from zoo-rn-s: scale-up, CNN -> ViT, supervised -> image-text
    assert {("zoo-rn-s", "zoo-rn-m"), ("zoo-rn-s", "zoo-vit"), ("zoo-rn-s", "zoo-clip-rn")} <= _pairs(runs, "diffup")
    # HSNet onto / from the ViT: explicit incompatible cells, never dropped; DiffUp: none
    bad = {(r.config.train_backbone, r.config.eval_backbone) for r in runs if r.config.method == "hsnet" and r.config.incompatible}
    assert bad == {(a, "zoo-vit") for a in ZOO if a != "zoo-vit"}
    assert not any(r.config.incompatible for r in runs if r.config.method != "hsnet")
    # one decoder per (method, training backbone): evaluation backbones never re-train
    assert len({r.decoder_id for r in runs if r.config.method == "diffup"}) == 4


def test_backbone_upgrade_full_profile_adds_only_hsnets_vit_row():
    quick = {r.run_id for r in load_suite(UPGRADE, "quick", check_data=False).expand()}
    full = load_suite(UPGRADE, "full", check_data=False).expand()
    extra = [r for r in full if r.run_id not in quick]
    assert quick <= {r.run_id for r in full}  # the quick profile's runs, same ids: reused, never re-run
    assert {(r.config.method, r.config.train_backbone) for r in extra} == {("hsnet", "zoo-vit")}
    assert _pairs(extra, "hsnet") == {("zoo-vit", b) for b in ZOO}


def test_backbone_upgrade_ci_profile_gates_the_quick_diffup_decoder():
    quick = [r for r in load_suite(UPGRADE, "quick", check_data=False).expand() if r.config.method == "diffup"]
    ci = [r for r in load_suite(UPGRADE, "ci", check_data=False).expand() if r.config.method == "diffup"]
    assert {r.decoder_id for r in ci} == {r.decoder_id for r in quick if r.config.train_backbone == "zoo-rn-s"}
    assert _pairs(ci, "diffup") == {("zoo-rn-s", b) for b in ("zoo-rn-s", "zoo-rn-m", "zoo-vit")}


def test_backbone_upgrade_paper_profile_is_table_5():
    runs = load_suite(UPGRADE, "paper", check_data=False).expand()
    table5 = ["clip-rn50", "clip-rn101", "clip-vit-b16", "in1k-rn50", "in1k-rn101", "in1k-rn152"]
    assert _pairs(runs, "diffup") == {(a, b) for a in table5 for b in table5}
    assert {r.config.fold for r in runs} == {3} and {r.config.shot for r in runs} == {1}
    du = next(r for r in runs if r.config.method == "diffup").config.method_options
    assert (du["width"], du["timesteps"], du["sampling_steps"]) == (40, 250, 50)


def test_backbone_upgrade_paper_profile_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSSBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    main(["run", str(UPGRADE), "--profile", "paper", "--dry-run"])  # planning needs neither data nor weights
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(UPGRADE), "--profile", "paper"])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any("dataset root 'data/pascal' does not exist" in line for line in lines), err
    assert any("in1k-rn50" in line and "--weights-dir" in line for line in lines), err
    # one line per problem, each naming the suite file (the first behind the CLI's "error: ")
    assert all(line.removeprefix("error: ").startswith(str(UPGRADE)) for line in lines), err
    assert len(lines) == 7, err  # data root + six backbones' weights
    assert not (tmp_path / "results").exists()


def test_a_methods_own_backbones_replace_the_matrix_and_are_checked(tmp_path):
    from fssbench.errors import UserError
    from tests import toy  # noqa: F401

    root = tmp_path / "toyroot"
    root.mkdir()
    base = f"""
name: own
matrix:
  methods: [prototype, {{name: toy-decoder, backbones: BB}}]
  backbones: [{{train: toy-s, eval: [toy-s, toy-m]}}]
  folds: [0]
  shots: [1]
dataset: {{name: toy, root: {root}}}
protocol: {{name: hsnet, img_size: 32}}
episodes: 4
"""
    f = tmp_path / "own.yaml"
    f.write_text(base.replace("BB", "[toy-m]"))
    runs = load_suite(f).expand()
    assert _pairs(runs, "prototype") == {("toy-s", "toy-s"), ("toy-s", "toy-m")}
    assert _pairs(runs, "toy-decoder") == {("toy-m", "toy-m")}
    f.write_text(base.replace("BB", "[{train: toy-s, evals: toy-m}]"))
    with pytest.raises(UserError, match=r"matrix\.methods\[1\]\.backbones\[0\]"):
        load_suite(f)
    f.write_text(base.replace("BB", "[no-such-net]"))
    with pytest.raises(UserError, match="unknown backbone 'no-such-net'"):
        load_suite(f)


def test_diffss_suite_pairs_every_condition_with_its_plain_run():
    runs = load_suite(DIFFSS, "quick", check_data=False).expand()
    methods = {"prototype", "hsnet", "hm", "diffup"}
    assert {r.config.method for r in runs} == methods and {r.config.shot for r in runs} == {1}
    for m in methods:
        mine = [r for r in runs if r.config.method == m]
        assert sorted((r.config.aux or {}).get("condition", "none") for r in mine) == ["hed", "mask", "none", "scribble"]
        assert len({r.decoder_id for r in mine}) == 1  # auxiliary supports never re-train
        assert all(r.config.aux["backend"] == "offline" and r.config.aux["aux_shots"] == 4 for r in mine if r.config.aux)
    paper = load_suite(DIFFSS, "paper", check_data=False).expand()
    assert {r.config.fold for r in paper} == {0, 1, 2, 3}
    assert {r.config.aux["backend"] for r in paper if r.config.aux} == {"controlnet"}
    cfg = next(r.config.aux for r in paper if r.config.aux)
    assert (cfg["guidance"], cfg["size"], cfg["aux_shots"]) == (9.0, 512, 4) and "a real shot photo of" in cfg["prompt"]


def test_diffss_paper_profile_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSSBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    main(["run", str(DIFFSS), "--profile", "paper", "--dry-run"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(DIFFSS), "--profile", "paper"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code != 0 and "Traceback" not in err
    assert len(lines) == 3, err  # data root, in1k-rn50, the ControlNet folders (one line)
    assert any("controlnet/sd-controlnet-hed/" in line and "--weights-dir" in line for line in lines), err
    assert not (tmp_path / "results").exists()


def test_options_added_later_keep_earlier_run_ids_at_their_default():
    """DiffUp's `quality` came after results existed: at its default it stays out of the run config
    (same run and decoder ids as before); set to anything else it is recorded like every option."""
    from fssbench.methods import get_method_class

    cls = get_method_class("diffup")
    assert "quality" in cls.quiet_defaults and "quality" not in cls.resolved_options({})
    assert cls.resolved_options({"quality": "none"})["quality"] == "none"
    runs = load_suite(UPGRADE, "quick", check_data=False).expand()
    assert not any("quality" in r.config.method_options for r in runs if r.config.method == "diffup")
    abl = load_suite(ROOT / "suites" / "ablation.yaml", "quick", check_data=False).expand()
    assert {r.config.method_options.get("quality") for r in abl} == {None, "no_err", "no_iou", "none"}


@pytest.mark.parametrize("name", ["annotation_types", "transform_fn", "ablation", "kshot"])
def test_diffup_paper_suites_dry_run_and_fail_before_any_work(name, tmp_path, capsys, monkeypatch):
    path = ROOT / "suites" / f"{name}.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FSSBENCH_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    main(["run", str(path), "--profile", "paper", "--dry-run"])
    assert "runs pending" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--profile", "paper"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code != 0 and "Traceback" not in err
    assert any("dataset root 'data/pascal' does not exist" in line for line in lines), err
    assert any("clip-rn50" in line and "RN50.pt" in line for line in lines), err  # DiffUp's paper backbone
    assert all(line.removeprefix("error: ").startswith(str(path)) for line in lines), err
    assert not (tmp_path / "results").exists()
