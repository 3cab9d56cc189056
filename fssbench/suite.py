"""Suites: a YAML matrix of methods x backbones x folds x shots x kinds x seeds, plus a protocol.

A suite file is data (``yaml.safe_load``). Profiles (e.g. ``quick`` on the embedded world,
``paper`` on PASCAL-5i) are deep-merged over the suite's base settings (mappings merge, lists
replace), so one matrix serves both. ``load_suite`` checks everything it can *before* any work
starts and reports every problem on its own line.

Each expanded run has a stable id: a readable prefix plus a hash of its resolved configuration.
Runs that share a trained decoder (same method, options, training settings, training backbone,
data, fold, seed) share a ``decoder_id`` so the decoder is trained once and reused for every
evaluation that needs it (other shots, annotation kinds, or evaluation backbones).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from fssbench.episode import ANNOTATION_KINDS
from fssbench.errors import UserError
from fssbench.methods import TrainConfig

TOP_KEYS = {"name", "description", "matrix", "dataset", "protocol", "episodes", "train", "eval", "profiles", "default_profile"}
MATRIX_KEYS = {"methods", "backbones", "folds", "shots", "kinds", "seeds"}
DATASET_KEYS = {"name", "root", "split_dir", "generate", "options"}
METHOD_KEYS = {"name", "options", "train", "label"}
EVAL_KEYS = {"batch_size", "n_boot", "device"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
# Run-config keys that only shape presentation (row label, row order in reports); they stay out of
# the run id so relabelling or reordering methods in a suite does not invalidate finished runs.
PRESENTATION_KEYS = frozenset({"label", "method_rank"})
# ``NAME:VARIANT`` backbone references -> the ``weights`` argument of ``create_backbone``.
BACKBONE_VARIANTS = {"": "auto", "random": "random"}


def split_backbone(ref: str) -> tuple[str, str]:
    """``("zoo-rn-s", "random")`` from ``"zoo-rn-s:random"``; the variant is "" when none is given."""
    base, _, variant = ref.partition(":")
    return base, variant


class SuiteError(UserError):
    """All problems of a suite, one per line."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


def canonical_hash(obj: Any, n: int = 12) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:n]


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


@dataclass(frozen=True)
class MethodEntry:
    name: str
    options: dict[str, Any]
    train: dict[str, Any]
    label: str


@dataclass(frozen=True)
class BackbonePair:
    train: str
    eval: str


@dataclass
class Run:
    """One evaluation of one method on one cell of the matrix."""

    run_id: str
    decoder_id: str | None
    config: dict[str, Any]
    train_config: dict[str, Any] | None


@dataclass
class Suite:
    name: str
    description: str
    profile: str | None
    source: Path
    dataset: dict[str, Any]
    protocol: dict[str, Any]
    episodes: int | None
    eval: dict[str, Any]
    methods: list[MethodEntry]
    backbones: list[BackbonePair]
    folds: list[int]
    shots: list[int]
    kinds: list[str]
    seeds: list[int]
    train: dict[str, Any] = field(default_factory=dict)

    def expand(self) -> list[Run]:
        """Every run of the matrix, in a stable order (method, backbones, fold, shot, kind, seed)."""
        from fssbench.methods import get_method_class
        from fssbench.protocols import get_protocol

        proto = get_protocol(self.protocol.get("name", "hsnet"), **{k: v for k, v in self.protocol.items() if k != "name"})
        n_eps = self.episodes if self.episodes is not None else proto.episodes_for(self.dataset["name"])
        data = {"name": self.dataset["name"], "root": str(self.dataset["root"])}
        if self.dataset.get("split_dir"):
            data["split_dir"] = str(self.dataset["split_dir"])
        runs: list[Run] = []
        for rank, m in enumerate(self.methods):
            cls = get_method_class(m.name)
            options = {**cls.default_config, **m.options}
            trains = cls.capabilities.trains
            tcfg = {**_dataclass_dict(cls.default_train), **self.train, **m.train} if trains else None
            for bb in self.backbones:
                for fold in self.folds:
                    for seed in self.seeds:
                        decoder_id = None
                        if trains:
                            dkey = {
                                "method": m.name,
                                "options": options,
                                "train": tcfg,
                                "backbone": bb.train,
                                "dataset": data,
                                "fold": fold,
                                "seed": seed,
                                "protocol": proto.to_dict(),
                            }
                            decoder_id = f"{m.name}-{bb.train}-f{fold}-s{seed}-{canonical_hash(dkey, 10)}".replace(":", "+")
                        for shot in self.shots:
                            for kind in self.kinds:
                                config = {
                                    "method": m.name,
                                    "label": m.label,
                                    "method_rank": rank,
                                    "method_options": options,
                                    "train_backbone": bb.train,
                                    "eval_backbone": bb.eval,
                                    "dataset": data["name"],
                                    "root": data["root"],
                                    "split_dir": data.get("split_dir"),
                                    "fold": fold,
                                    "shot": shot,
                                    "kind": kind,
                                    "seed": seed,
                                    "protocol": proto.name,
                                    "protocol_settings": proto.to_dict(),
                                    "episodes": n_eps,
                                    "decoder_id": decoder_id,
                                }
                                stitch = "" if bb.train == bb.eval else f"-to-{bb.eval}"
                                run_id = (
                                    f"{m.label}-{bb.train}{stitch}-f{fold}-{shot}shot-{kind}-s{seed}-"
                                    f"{canonical_hash({k: v for k, v in config.items() if k not in PRESENTATION_KEYS}, 10)}"
                                ).replace(":", "+")
                                runs.append(Run(run_id, decoder_id, config, tcfg))
        return runs


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_suite(path: str | Path, profile: str | None = None, *, check_data: bool = True) -> Suite:
    """Parse, merge the profile, and validate a suite; raises ``SuiteError`` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file '{path}' not found; pass a YAML file such as suites/smoke.yaml")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"suite file '{path}' is not valid YAML{where}; fix the syntax") from None
    if not isinstance(doc, dict):
        raise UserError(f"suite file '{path}' must be a mapping with keys such as name, matrix, dataset")
    problems: list[str] = []
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, dict):
        problems.append("'profiles' must be a mapping of profile name -> settings")
        profiles = {}
    chosen = profile or doc.get("default_profile")
    if chosen is not None:
        if chosen not in profiles:
            raise SuiteError(str(path), [f"unknown profile '{chosen}'; profiles: {', '.join(profiles) or 'none'}"])
        over = profiles[chosen] or {}
        if not isinstance(over, dict):
            raise SuiteError(str(path), [f"profile '{chosen}' must be a mapping"])
        bad = sorted(set(over) - (TOP_KEYS - {"profiles", "default_profile", "name"}))
        if bad:
            problems.append(f"profile '{chosen}' has unknown key(s) {', '.join(bad)}")
        doc = deep_merge({k: v for k, v in doc.items() if k not in ("profiles",)}, over)

    for k in sorted(set(doc) - TOP_KEYS):
        problems.append(f"unknown key '{k}' (valid: {', '.join(sorted(TOP_KEYS))})")
    name = doc.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        problems.append("'name' must be a string of letters, digits, '-' or '_' (it names results/<name>/)")
        name = path.stem
    matrix = doc.get("matrix")
    if not isinstance(matrix, dict):
        problems.append("'matrix' must be a mapping with methods, backbones, folds, shots, kinds, seeds")
        matrix = {}
    for k in sorted(set(matrix) - MATRIX_KEYS):
        problems.append(f"unknown key 'matrix.{k}' (valid: {', '.join(sorted(MATRIX_KEYS))})")

    methods = _parse_methods(matrix.get("methods"), problems)
    backbones = _parse_backbones(matrix.get("backbones"), problems)
    folds = _int_list(matrix.get("folds", [0]), "matrix.folds", problems, minimum=0)
    shots = _int_list(matrix.get("shots", [1]), "matrix.shots", problems, minimum=0)
    seeds = _int_list(matrix.get("seeds", [0]), "matrix.seeds", problems, minimum=0)
    kinds = matrix.get("kinds", ["mask"])
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds) or not kinds:
        problems.append("'matrix.kinds' must be a non-empty list of annotation kinds")
        kinds = []
    for k in kinds:
        if k not in ANNOTATION_KINDS:
            problems.append(f"unknown annotation kind '{k}' (valid: {', '.join(ANNOTATION_KINDS)})")

    dataset = doc.get("dataset")
    if not isinstance(dataset, dict):
        problems.append("'dataset' must be a mapping with name and root")
        dataset = {"name": "pascal", "root": "."}
    for k in sorted(set(dataset) - DATASET_KEYS):
        problems.append(f"unknown key 'dataset.{k}' (valid: {', '.join(sorted(DATASET_KEYS))})")
    protocol = doc.get("protocol", {"name": "hsnet"})
    if isinstance(protocol, str):
        protocol = {"name": protocol}
    if not isinstance(protocol, dict):
        problems.append("'protocol' must be a name or a mapping with name and overrides")
        protocol = {"name": "hsnet"}
    episodes = doc.get("episodes")
    if episodes is not None and (not _is_int(episodes) or episodes <= 0):
        problems.append(f"'episodes' must be a positive integer, got {episodes!r}")
        episodes = None
    train = doc.get("train") or {}
    if not isinstance(train, dict):
        problems.append("'train' must be a mapping of training settings")
        train = {}
    for k in sorted(set(train) - TRAIN_KEYS):
        problems.append(f"unknown key 'train.{k}' (valid: {', '.join(sorted(TRAIN_KEYS))})")
    ev = doc.get("eval") or {}
    if not isinstance(ev, dict):
        problems.append("'eval' must be a mapping")
        ev = {}
    for k in sorted(set(ev) - EVAL_KEYS):
        problems.append(f"unknown key 'eval.{k}' (valid: {', '.join(sorted(EVAL_KEYS))})")

    suite = Suite(
        name=name,
        description=str(doc.get("description", "")),
        profile=chosen,
        source=path,
        dataset=dataset,
        protocol=protocol,
        episodes=episodes,
        eval=ev,
        methods=methods,
        backbones=backbones,
        folds=folds,
        shots=shots,
        kinds=kinds,
        seeds=seeds,
        train=train,
    )
    if not problems:
        _check_registries(suite, problems, check_data=check_data)
    if problems:
        raise SuiteError(str(path), problems)
    return suite


def _int_list(value: Any, where: str, problems: list[str], minimum: int = 0) -> list[int]:
    if not isinstance(value, list) or not value or not all(_is_int(v) and v >= minimum for v in value):
        problems.append(f"'{where}' must be a non-empty list of integers >= {minimum}, got {value!r}")
        return []
    return list(value)


def _parse_methods(value: Any, problems: list[str]) -> list[MethodEntry]:
    if not isinstance(value, list) or not value:
        problems.append("'matrix.methods' must be a non-empty list of method names or {name, options, train}")
        return []
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            problems.append(f"matrix.methods[{i}] must be a name or a mapping with 'name'")
            continue
        for k in sorted(set(item) - METHOD_KEYS):
            problems.append(f"unknown key 'matrix.methods[{i}].{k}' (valid: {', '.join(sorted(METHOD_KEYS))})")
        options = item.get("options") or {}
        train = item.get("train") or {}
        if not isinstance(options, dict):
            problems.append(f"matrix.methods[{i}].options must be a mapping")
            options = {}
        if not isinstance(train, dict):
            problems.append(f"matrix.methods[{i}].train must be a mapping")
            train = {}
        for k in sorted(set(train) - TRAIN_KEYS):
            problems.append(f"unknown key 'matrix.methods[{i}].train.{k}' (valid: {', '.join(sorted(TRAIN_KEYS))})")
        out.append(MethodEntry(item["name"], options, train, str(item.get("label", item["name"]))))
    labels = [m.label for m in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"two methods share the label '{lab}'; give each a distinct 'label'")
    return out


def _parse_backbones(value: Any, problems: list[str]) -> list[BackbonePair]:
    if not isinstance(value, list) or not value:
        problems.append("'matrix.backbones' must be a non-empty list of names or {train: NAME, eval: NAME|[NAMES]}")
        return []
    out: list[BackbonePair] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(BackbonePair(item, item))
        elif isinstance(item, dict) and isinstance(item.get("train"), str):
            bad = sorted(set(item) - {"train", "eval"})
            if bad:
                problems.append(f"unknown key(s) {', '.join(bad)} in matrix.backbones[{i}] (valid: train, eval)")
            evals = item.get("eval", item["train"])
            evals = [evals] if isinstance(evals, str) else evals
            if not isinstance(evals, list) or not all(isinstance(e, str) for e in evals):
                problems.append(f"matrix.backbones[{i}].eval must be a name or a list of names")
                continue
            out.extend(BackbonePair(item["train"], e) for e in evals)
        else:
            problems.append(f"matrix.backbones[{i}] must be a name or a mapping {{train: NAME, eval: NAME|[NAMES]}}")
    return out


def _check_registries(suite: Suite, problems: list[str], *, check_data: bool) -> None:
    from fssbench.backbones import backbone_names
    from fssbench.datasets import dataset_names, get_dataset
    from fssbench.datasets.base import _ALIASES
    from fssbench.methods import get_method_class, method_names
    from fssbench.protocols import get_protocol

    known_methods = method_names()
    known_bb = set(backbone_names())
    for m in suite.methods:
        if m.name not in known_methods:
            problems.append(f"unknown method '{m.name}' (known: {', '.join(known_methods)})")
            continue
        cls = get_method_class(m.name)
        bad = sorted(set(m.options) - set(cls.default_config))
        if bad:
            problems.append(
                f"method '{m.name}' has no option(s) {', '.join(bad)} (valid: {', '.join(sorted(cls.default_config)) or 'none'})"
            )
        for kind in suite.kinds:
            for shot in suite.shots:
                why = cls.capabilities.supports(kind, shot)
                if why:
                    problems.append(f"method '{m.name}' does not support {why}; drop it from the matrix or the method")
        if not cls.capabilities.stitchable:
            for bb in suite.backbones:
                if bb.train != bb.eval:
                    problems.append(
                        f"method '{m.name}' cannot be stitched ({bb.train} -> {bb.eval}); evaluate it on its training backbone"
                    )
    for bb in suite.backbones:
        for name in sorted({bb.train, bb.eval}):
            base, variant = split_backbone(name)
            if base not in known_bb:
                problems.append(f"unknown backbone '{base}' (see `fssbench backbones`)")
            elif variant not in BACKBONE_VARIANTS:
                problems.append(f"unknown backbone variant '{name}'; the only variant is '{base}:random' (random init)")
    try:
        get_protocol(suite.protocol.get("name", "hsnet"), **{k: v for k, v in suite.protocol.items() if k != "name"})
    except UserError as exc:
        problems.append(str(exc))
    except TypeError as exc:
        problems.append(f"protocol settings: {exc}")
    dname = suite.dataset.get("name")
    if not isinstance(dname, str) or dname.lower() not in _ALIASES:
        problems.append(f"unknown dataset '{dname}' (known: {', '.join(dataset_names())})")
        return
    root = suite.dataset.get("root")
    if not isinstance(root, str):
        problems.append("'dataset.root' must be a path")
        return
    gen = suite.dataset.get("generate")
    if not (gen in (None, "synth") or (isinstance(gen, dict) and set(gen) <= {"seed", "size"})):
        problems.append(f"'dataset.generate' must be 'synth', a mapping {{seed, size}}, or absent; got {gen!r}")
    if check_data and gen is None and not Path(root).is_dir():
        problems.append(f"dataset root '{root}' does not exist; download {dname} there or fix dataset.root")
        return
    if check_data and Path(root).is_dir():
        ds = get_dataset(dname, root, split_dir=suite.dataset.get("split_dir"), **(suite.dataset.get("options") or {}))
        for f in suite.folds:
            if not 0 <= f < ds.n_folds:
                problems.append(f"fold {f} is out of range for {ds.name} (0..{ds.n_folds - 1})")
