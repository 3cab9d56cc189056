"""Method options as data (issue 24, item 3): every shipped method declares its options' types and
ranges, a suite's bad value fails when the suite loads (one line, before any data or backbone), and
the declared defaults are the constructor's defaults."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from fssbench.cli import main
from fssbench.errors import UserError
from fssbench.methods import Method, get_method_class, method_names
from fssbench.options import Option, defaults
from fssbench.suite import load_suite
from tests import toy  # noqa: F401  (registers toy-s and the toy methods)

SHIPPED = ("prototype", "hsnet", "hm", "diffup")

# (method, option, bad value, what the line must say is allowed): a wrong type, a value out of
# range and a value not among the choices for each shipped method, plus its rules across options.
BAD = [
    ("prototype", "hybrid_masking", "yes", "true or false"),
    ("prototype", "layers", "last", "auto or a non-empty list of strings"),
    ("prototype", "layers", [], "non-empty list"),
    ("hsnet", "fg_weight", "heavy", "a number > 0"),
    ("hsnet", "fg_weight", 0, "a number > 0"),
    ("hsnet", "layers", "deep", "auto or a non-empty list"),
    ("hm", "hybrid_masking", 1, "true or false"),
    ("hm", "fg_weight", -2.5, "a number > 0"),
    ("hm", "layers", [3], "list of strings or lists"),
    ("diffup", "ensemble", "four", "an integer >= 1"),
    ("diffup", "ensemble", 0, "an integer >= 1"),
    ("diffup", "ensemble", True, "an integer >= 1"),
    ("diffup", "augment", 9, "an integer 0..4"),
    ("diffup", "width", 6, "a multiple of 4"),
    ("diffup", "prior_size", 20, "a multiple of 8"),
    ("diffup", "affinity_tau", 0.0, "a number > 0"),
    ("diffup", "eta", -0.1, "a number >= 0"),
    ("diffup", "process", "sde", "one of offset, ddpm"),
    ("diffup", "prediction", "v", "one of epsilon, sample"),
    ("diffup", "quality", "half", "one of full, no_iou, no_err, none"),
    ("diffup", "level_rule", "width", "one of stage, depth"),
    ("diffup", "transform", "l3", "METRIC[:CONVERSION]"),
    ("diffup", "train_transforms", ["cosine", "l2:log"], "METRIC[:CONVERSION]"),
    ("diffup", "train_transforms", [], "non-empty list"),
    ("diffup", "query_info", ["hog"], "distinct names from sobel, canny, vae"),
    ("diffup", "query_info", ["sobel", "sobel"], "distinct names"),
    ("diffup", "train_kinds", ["polygon"], "names from bbox, image, mask, scribble, text"),
    ("diffup", "vae_path", 3, "a string or null"),
    ("diffup", "layers", "most", "one of auto, all"),
]
ACROSS = [
    ("diffup", {"sampling_steps": 300}, "sampling_steps (300) must not exceed timesteps (250)"),
    ("diffup", {"query_info": ["vae"]}, "vae needs vae_path"),
]

SUITE = """
name: bad-options
matrix:
  methods: {methods}
  backbones: [toy-s]
  folds: [0]
  shots: [1]
dataset: {{name: pascal, root: '{root}', generate: synth}}
protocol: {{name: hsnet, img_size: 32}}
episodes: 4
{extra}
"""


def _suite(tmp_path: Path, methods: str, extra: str = "") -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(SUITE.format(methods=methods, root=tmp_path / "data", extra=extra)))
    return path


def _entry(method: str, options: dict[str, object]) -> str:
    return f"[prototype, {{name: {method}, label: {method}-x, options: {json.dumps(options)}}}]"


# --- the declaration ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_methods_declare_every_option_and_its_defaults_are_the_constructors(name):
    cls = get_method_class(name)
    assert cls.option_specs and set(cls.option_specs) == set(cls.default_config)
    assert cls.default_config == defaults(cls.option_specs)  # one source: the constructor fills these
    assert cls.option_problems(cls.default_config) == []
    assert all(isinstance(spec, Option) for spec in cls.option_specs.values())


def test_every_registered_method_with_a_declaration_derives_its_defaults_from_it():
    for name in method_names():
        cls = get_method_class(name)
        if cls.option_specs:
            assert cls.default_config == defaults(cls.option_specs), name


def test_hm_changes_only_the_default_of_hybrid_masking():
    hs, hm = get_method_class("hsnet"), get_method_class("hm")
    assert hm.default_config == {**hs.default_config, "hybrid_masking": True}
    assert hm.option_specs["fg_weight"] == hs.option_specs["fg_weight"]


def test_defaults_can_have_only_one_source():
    with pytest.raises(TypeError, match="option_specs only"):
        type("Both", (Method,), {"option_specs": {"a": Option(1, int)}, "default_config": {"a": 1}})
    with pytest.raises(TypeError, match="not default_config"):
        type("Drift", (get_method_class("hsnet"),), {"default_config": {"fg_weight": 2.0}})


def test_a_default_outside_its_own_spec_is_refused_at_registration():
    from fssbench.methods import register_method

    bad = type("BadDefault", (Method,), {"name": "bad-default", "option_specs": {"n": Option(0, int, ge=1)}})
    with pytest.raises(ValueError, match="declared default"):
        register_method(bad)


# --- Option itself ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, good, bad",
    [
        (Option(1, int, ge=1), [1, 7], [0, 1.5, True, "1", None]),
        (Option(1.0, float, gt=0, le=2), [1, 0.5, 2.0], [0, 2.5, "x", False]),
        (Option(8, int, ge=8, multiple_of=8), [8, 64], [12, 4]),
        (Option("a", str, choices=("a", "b")), ["a", "b"], ["c", 1]),
        (Option(None, (str, type(None))), [None, "p"], [3, []]),
        (Option([], list, items=Option(None, str, choices=("x", "y")), distinct=True), [[], ["x", "y"], ("x",)], [["x", "x"], ["z"], "x"]),
        (Option(["a"], list, items=Option(None, str), min_len=1), [["a"]], [[], [1]]),
        (Option("a", str, check=lambda v: None if v.islower() else "lower case"), ["abc"], ["ABC"]),
    ],
)
def test_option_accepts_what_it_declares_and_nothing_else(spec, good, bad):
    assert all(spec.problem(v) is None for v in good)
    assert all(spec.problem(v) is not None for v in bad)


def test_option_says_what_is_allowed():
    assert Option(1, int, ge=1).allowed() == "an integer >= 1"
    assert Option(1, int, ge=0, le=4).allowed() == "an integer 0..4"
    assert Option(1.0, float, gt=0).allowed() == "a number > 0"
    assert Option(1, int, le=3).allowed() == "an integer <= 3"
    assert Option("auto", (str, list), choices=("auto",), items=Option(None, str), min_len=1).allowed() == (
        "auto or a non-empty list of strings"
    )


# --- the suite check ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method, option, value, allowed", BAD, ids=[f"{m}.{o}={v!r}" for m, o, v, _ in BAD])
def test_a_bad_option_value_fails_at_suite_load_in_one_line(tmp_path, method, option, value, allowed):
    path = _suite(tmp_path, _entry(method, {option: value}))
    with pytest.raises(UserError) as err:
        load_suite(path, check_data=False)
    line = str(err.value)
    assert len(line.splitlines()) == 1, line
    assert line.startswith(str(path)) and f"method '{method}-x' ({method})" in line
    assert f"option {option} must be" in line and repr(value) in line and allowed in line, line


@pytest.mark.parametrize("method, options, why", ACROSS)
def test_options_that_do_not_go_together_fail_at_suite_load(tmp_path, method, options, why):
    with pytest.raises(UserError, match="^[^\n]*" + re.escape(why) + "[^\n]*$"):
        load_suite(_suite(tmp_path, _entry(method, options)), check_data=False)


def test_an_unknown_option_names_the_closest_known_one(tmp_path):
    with pytest.raises(UserError) as err:
        load_suite(_suite(tmp_path, _entry("diffup", {"ensembel": 2})), check_data=False)
    line = str(err.value)
    assert len(line.splitlines()) == 1 and "has no option(s) ensembel" in line and "did you mean ensemble?" in line


def test_good_options_still_load_and_keep_their_values(tmp_path):
    opts = {"width": 8, "prior_size": 32, "eta": 0, "transform": "l2:exp", "train_transforms": ["l2:exp", "cosine"]}
    runs = load_suite(_suite(tmp_path, _entry("diffup", opts)), check_data=False).expand()
    got = next(r.config.method_options for r in runs if r.config.method == "diffup")
    assert {k: got[k] for k in opts} == opts and got["eta"] == 0 and isinstance(got["eta"], int)  # checked, not coerced


def test_profile_options_go_through_the_same_check(tmp_path):
    extra = """
profiles:
  quick:
    matrix:
      methods: [{name: hsnet, options: {fg_weight: -1.0}}]
"""
    path = _suite(tmp_path, "[prototype]", extra)
    load_suite(path, check_data=False)  # the base matrix is fine
    with pytest.raises(UserError, match=r"^[^\n]*method 'hsnet' option fg_weight must be a number > 0, got -1\.0$"):
        load_suite(path, "quick", check_data=False)
    path.write_text(path.read_text() + "default_profile: quick\n")
    with pytest.raises(UserError, match="fg_weight"):
        load_suite(path, check_data=False)


def test_the_constructor_applies_the_same_declaration():
    from tests.toy import ToyBackbone

    with pytest.raises(UserError, match=r"^method 'diffup' option ensemble must be an integer >= 1, got 0$"):
        get_method_class("diffup")(ToyBackbone(), ensemble=0)
    with pytest.raises(UserError, match=r"^method 'prototype' has no option\(s\) layer .*did you mean layers\?$"):
        get_method_class("prototype")(ToyBackbone(), layer="auto")


# --- through the CLI: one line, non-zero, nothing built -----------------------------------------------
@pytest.mark.parametrize("method, option, value", [(m, o, v) for m, o, v, _ in BAD[::4]] + [("hm", "hybrid_masking", 1)])
@pytest.mark.parametrize("dry", [True, False], ids=["dry-run", "run"])
def test_the_cli_refuses_a_bad_option_before_any_work(tmp_path, capsys, monkeypatch, method, option, value, dry):
    import fssbench.backbones
    import fssbench.datasets

    def must_not_run(*args, **kwargs):
        raise AssertionError("built before the suite's options were checked")

    monkeypatch.setattr(fssbench.backbones, "create_backbone", must_not_run)
    monkeypatch.setattr(fssbench.datasets, "get_dataset", must_not_run)
    path = _suite(tmp_path, _entry(method, {option: value}))
    results = tmp_path / "results"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["run", str(path), "--results-dir", str(results), *(["--dry-run"] if dry else [])])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exc.value.code != 0 and "Traceback" not in err
    assert len(lines) == 1 and f"option {option}" in lines[0] and repr(value) in lines[0], err
    assert not results.exists() and not (tmp_path / "data").exists()
