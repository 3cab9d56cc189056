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
from fssbench.options import TYPE_NAMES, type_ok
from fssbench.resources import DEFAULT_RESOURCES, Resources, parse_resources

TOP_KEYS = {"name", "description", "matrix", "dataset", "protocol", "episodes", "train", "eval", "aux", "resources", "profiles", "default_profile"}
MATRIX_KEYS = {"methods", "backbones", "folds", "shots", "kinds", "kind_shots", "seeds", "supports", "aux"}
DATASET_KEYS = {"name", "root", "split_dir", "generate", "options"}
METHOD_KEYS = {"name", "options", "train", "label", "checkpoint", "backbones", "kinds", "kind_shots", "seeds"}
EVAL_KEYS = {"batch_size", "n_boot", "device", "artefacts", "shards", "feature_cache_gb"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}
SEED_KEYS = ("episodes", "train", "sampling")
"""The three seeds, one meaning each: which episodes; decoder init and training; evaluation-time sampling."""
# Run-config keys that only shape presentation (row label, row order in reports); they stay out of
# the run id so relabelling or reordering methods in a suite does not invalidate finished runs.
PRESENTATION_KEYS = frozenset({"label", "method_rank"})
PROTOCOL_TYPES = {"img_size": int, "keep_aspect": bool, "score_original": bool, "min_fg_pixels": int, "default_episodes": int}
EVAL_TYPES = {"batch_size": int, "n_boot": int, "device": str, "artefacts": int, "shards": int, "feature_cache_gb": float}
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
    checkpoint: str | None = None  # a released decoder file: evaluated as it is, never trained
    backbones: tuple["BackbonePair", ...] | None = None  # replaces matrix.backbones for this method
    kinds: tuple[str, ...] | None = None  # keeps only these kinds of the matrix's (kind, shot) pairs
    kind_shots: tuple[tuple[str, int], ...] | None = None  # replaces the matrix's (kind, shot) pairs
    seeds: tuple[dict[str, int], ...] | None = None  # replaces matrix.seeds (e.g. more training seeds)


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
    kind_shots: list[tuple[str, int]]
    seeds: list[dict[str, int]]
    supports: list[str] = field(default_factory=lambda: ["own"])
    train: dict[str, Any] = field(default_factory=dict)
    aux_conditions: list[str] = field(default_factory=lambda: ["none"])
    """``matrix.aux``: ``none`` (no auxiliary supports) and/or conditions of ``fssbench.auxiliary``."""
    aux: dict[str, Any] = field(default_factory=dict)
    """The suite's ``aux`` settings (backend, aux_shots, seed, ...), defaults filled in."""
    resources: dict[str, Resources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    """``resources.train`` / ``resources.eval``, parsed (defaults filled in): what a cluster executor
    requests per task (``fssbench.resources``); no part of any run's identity."""

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(k for k, _ in self.kind_shots))

    @property
    def shots(self) -> list[int]:
        return list(dict.fromkeys(s for _, s in self.kind_shots))

    def method_backbones(self, m: MethodEntry) -> list[BackbonePair]:
        """The method's own ``backbones`` where it gives them, else the matrix's."""
        return list(m.backbones) if m.backbones is not None else list(self.backbones)

    def method_seeds(self, m: MethodEntry) -> list[dict[str, int]]:
        """The method's own ``seeds`` where it gives them (e.g. several training seeds for a method
        whose trainings vary), else the matrix's."""
        return list(m.seeds) if m.seeds is not None else list(self.seeds)

    def method_kind_shots(self, m: MethodEntry) -> list[tuple[str, int]]:
        """The method's own ``kind_shots`` where it gives them, else the matrix's (kind, shot) pairs;
        restricted to the method's ``kinds`` where it gives them."""
        pairs = list(m.kind_shots) if m.kind_shots is not None else list(self.kind_shots)
        return [(k, s) for k, s in pairs if m.kinds is None or k in m.kinds]

    def all_backbones(self) -> list[BackbonePair]:
        """Every (train, eval) pair any method of the suite uses."""
        return list(dict.fromkeys([bb for m in self.methods for bb in self.method_backbones(m)] + list(self.backbones)))

    def expand(self) -> list[Run]:
        """Every run of the matrix, in a stable order (method, backbones, fold, seeds, kind/shot, supports).

        The decoder id hashes only what training depends on (method, its training options, the
        training settings, the training backbone, data, fold, training seed, protocol); evaluation
        options, the evaluation backbone, kind, shot, supports and the episode/sampling seeds only
        change the run id, so they never cause re-training.
        """
        from fssbench.methods import get_method_class
        from fssbench.protocols import get_protocol

        proto = get_protocol(self.protocol.get("name", "hsnet"), **{k: v for k, v in self.protocol.items() if k != "name"})
        n_eps = self.episodes if self.episodes is not None else proto.episodes_for(self.dataset["name"])
        data = {"name": self.dataset["name"], "root": str(self.dataset["root"])}
        if self.dataset.get("split_dir"):
            data["split_dir"] = str(self.dataset["split_dir"])
        if self.dataset.get("options"):
            data["options"] = dict(self.dataset["options"])
        runs: list[Run] = []
        for rank, m in enumerate(self.methods):
            cls = get_method_class(m.name)
            options = cls.resolved_options(m.options)
            trains = cls.capabilities.trains and m.checkpoint is None
            tcfg = {**_dataclass_dict(cls.default_train), **self.train, **m.train} if trains else None
            for bb in self.method_backbones(m):
                incompatible = None
                if bb.train != bb.eval:
                    from fssbench.backbones import get_backbone_info

                    incompatible = cls.stitch_incompatible(
                        options, get_backbone_info(split_backbone(bb.train)[0]), get_backbone_info(split_backbone(bb.eval)[0])
                    )
                for fold in self.folds:
                    for seeds in self.method_seeds(m):
                        decoder_id = None
                        if trains:
                            dkey = {
                                "method": m.name,
                                "options": cls.training_options(options),
                                "train": tcfg,
                                "backbone": bb.train,
                                "dataset": data,
                                "fold": fold,
                                "seed": seeds["train"],
                                "protocol": proto.to_dict(),
                            }
                            decoder_id = f"{m.name}-{bb.train}-f{fold}-s{seeds['train']}-{canonical_hash(dkey, 10)}".replace(":", "+")
                        for kind, shot in self.method_kind_shots(m):
                            for supports, aux_cond in [(sp, a) for sp in self.supports for a in self.aux_conditions]:
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
                                    "dataset_options": data.get("options", {}),
                                    "fold": fold,
                                    "shot": shot,
                                    "kind": kind,
                                    "seeds": dict(seeds),
                                    "protocol": proto.name,
                                    "protocol_settings": proto.to_dict(),
                                    "episodes": n_eps,
                                    "decoder_id": decoder_id,
                                    "checkpoint": m.checkpoint,
                                    "supports": supports,
                                    "incompatible": incompatible,
                                }
                                stitch = "" if bb.train == bb.eval else f"-to-{bb.eval}"
                                ctl = "" if supports == "own" else f"-{supports}"
                                if aux_cond != "none":  # only then: runs without aux keep their ids
                                    from fssbench.auxiliary.supplier import run_aux_config

                                    config["aux"] = run_aux_config(self.aux, aux_cond)
                                    ctl += f"-aux{self.aux['aux_shots']}{aux_cond}"
                                run_id = (
                                    f"{m.label}-{bb.train}{stitch}-f{fold}-{shot}shot-{kind}{ctl}-s{seed_tag(seeds)}-"
                                    f"{canonical_hash({k: v for k, v in config.items() if k not in PRESENTATION_KEYS}, 10)}"
                                ).replace(":", "+")
                                runs.append(Run(run_id, decoder_id, config, tcfg))
        return runs


def seed_tag(seeds: dict[str, int]) -> str:
    """``0`` when the three seeds agree, else ``e0t1s2`` (episodes, train, sampling)."""
    vals = [seeds[k] for k in SEED_KEYS]
    return str(vals[0]) if len(set(vals)) == 1 else "".join(f"{k[0]}{v}" for k, v in zip(SEED_KEYS, vals))


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _is_int(v: Any) -> bool:
    return type_ok(v, int)


def load_suite(
    path: str | Path, profile: str | None = None, *, check_data: bool = True, weights_dir: str | Path | None = None
) -> Suite:
    """Parse, merge the profile, and validate a suite; raises ``SuiteError`` listing every problem.

    With ``check_data`` the data root and every backbone's weights file (looked up in
    ``weights_dir``, ``$FSSBENCH_WEIGHTS`` and the library caches) must be there: a paper profile
    without them fails here, before any work, naming each missing file and where it goes."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"suite file '{path}' is a folder, not a file; pass a YAML file such as suites/smoke.yaml")
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
    kind_shots = _parse_kind_shots(matrix, problems)
    seeds = _parse_seeds(matrix.get("seeds", [0]), problems)
    supports = matrix.get("supports", ["own"])
    from fssbench.controls import SUPPORT_MODES

    if not isinstance(supports, list) or not supports or not all(x in SUPPORT_MODES for x in supports):
        problems.append(f"'matrix.supports' must be a non-empty list of {', '.join(SUPPORT_MODES)}; got {supports!r}")
        supports = ["own"]

    from fssbench.auxiliary.conditions import CONDITIONS
    from fssbench.auxiliary.supplier import check_settings

    aux_conditions = matrix.get("aux", ["none"])
    if not isinstance(aux_conditions, list) or not aux_conditions or not all(x in ("none", *CONDITIONS) for x in aux_conditions):
        problems.append(f"'matrix.aux' must be a non-empty list of none, {', '.join(CONDITIONS)}; got {aux_conditions!r}")
        aux_conditions = ["none"]
    aux_settings = check_settings(doc.get("aux"), problems)

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
    _check_types(train, TRAIN_TYPES, "train", problems)
    for i, m in enumerate(methods):
        _check_types(m.train, TRAIN_TYPES, f"matrix.methods[{i}].train", problems)
    ev = doc.get("eval") or {}
    if not isinstance(ev, dict):
        problems.append("'eval' must be a mapping")
        ev = {}
    for k in sorted(set(ev) - EVAL_KEYS):
        problems.append(f"unknown key 'eval.{k}' (valid: {', '.join(sorted(EVAL_KEYS))})")
    _check_types(ev, EVAL_TYPES, "eval", problems)
    fc = ev.get("feature_cache_gb", 0)
    if isinstance(fc, (int, float)) and not isinstance(fc, bool) and fc < 0:
        problems.append(f"'eval.feature_cache_gb' must be >= 0 (0 turns the feature cache off), got {fc!r}")
    _check_types(protocol, PROTOCOL_TYPES, "protocol", problems)
    resources = parse_resources(doc.get("resources"), problems)

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
        kind_shots=kind_shots,
        seeds=seeds,
        supports=list(dict.fromkeys(supports)),
        train=train,
        aux_conditions=list(dict.fromkeys(aux_conditions)),
        aux=aux_settings,
        resources=resources,
    )
    if not problems:
        _check_registries(suite, problems, check_data=check_data, weights_dir=weights_dir)
    if problems:
        raise SuiteError(str(path), problems)
    return suite


TRAIN_TYPES = {f.name: type(getattr(TrainConfig(), f.name)) for f in fields(TrainConfig)}


def _check_types(values: dict[str, Any], types: dict[str, type], where: str, problems: list[str]) -> None:
    """One problem per setting whose value has the wrong type (``lr: fast``, ``img_size: big``)."""
    for k, v in values.items():
        want = types.get(k)
        if want is None:
            continue
        if not type_ok(v, want):
            problems.append(f"'{where}.{k}' must be {TYPE_NAMES.get(want, want.__name__)}, got {v!r}")


def _parse_kind_shots(matrix: dict[str, Any], problems: list[str], where: str = "matrix.kind_shots") -> list[tuple[str, int]]:
    """(kind, shot) pairs: the product of ``kinds`` x ``shots``, or the listed ``kind_shots``
    (``[{kind: text, shots: [0]}, {kind: mask, shots: [1, 5]}]``) when a full product makes no sense."""
    pairs: list[tuple[str, int]] = []
    if "kind_shots" in matrix:
        if "kinds" in matrix or "shots" in matrix:
            problems.append("give either 'matrix.kind_shots' or 'matrix.kinds' + 'matrix.shots', not both")
        items = matrix["kind_shots"]
        if not isinstance(items, list) or not items:
            problems.append(f"'{where}' must be a non-empty list of {{kind: KIND, shots: [K, ...]}}")
            return []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"kind", "shots"} or not isinstance(item["kind"], str):
                problems.append(f"{where}[{i}] must be a mapping {{kind: KIND, shots: [K, ...]}}")
                continue
            shots = _int_list(item["shots"], f"{where}[{i}].shots", problems, minimum=0)
            pairs.extend((item["kind"], k) for k in shots)
    else:
        shots = _int_list(matrix.get("shots", [1]), "matrix.shots", problems, minimum=0)
        kinds = matrix.get("kinds", ["mask"])
        if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds) or not kinds:
            problems.append("'matrix.kinds' must be a non-empty list of annotation kinds")
            kinds = []
        pairs = [(k, s) for k in kinds for s in shots]
    for k in dict.fromkeys(k for k, _ in pairs):
        if k not in ANNOTATION_KINDS:
            problems.append(f"unknown annotation kind '{k}' (valid: {', '.join(ANNOTATION_KINDS)})")
    return list(dict.fromkeys(pairs))


def _parse_seeds(value: Any, problems: list[str], where: str = "matrix.seeds") -> list[dict[str, int]]:
    """``[0, 1]``: each value sets all three seeds; ``{episodes: [0], train: [0, 1, 2], sampling: [0]}``:
    their product (a missing key is ``[0]``)."""
    if isinstance(value, dict):
        bad = sorted(set(value) - set(SEED_KEYS))
        if bad:
            problems.append(f"unknown key(s) {', '.join(bad)} in {where} (valid: {', '.join(SEED_KEYS)})")
        lists = [_int_list(value.get(k, [0]), f"{where}.{k}", problems) for k in SEED_KEYS]
        import itertools

        return [dict(zip(SEED_KEYS, combo)) for combo in itertools.product(*lists)]
    return [{k: s for k in SEED_KEYS} for s in _int_list(value, where, problems)]


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
        ckpt = item.get("checkpoint")
        if ckpt is not None and not isinstance(ckpt, str):
            problems.append(f"matrix.methods[{i}].checkpoint must be a path to a decoder file")
            ckpt = None
        if ckpt is not None and train:
            problems.append(f"matrix.methods[{i}] gives both 'checkpoint' and 'train'; a released checkpoint is not trained")
        own_bb = None
        if "backbones" in item:
            own_bb = tuple(_parse_backbones(item["backbones"], problems, where=f"matrix.methods[{i}].backbones"))
        own_kinds = None
        if "kinds" in item:
            kv = item["kinds"]
            if not isinstance(kv, list) or not kv or not all(isinstance(k, str) and k in ANNOTATION_KINDS for k in kv):
                problems.append(f"matrix.methods[{i}].kinds must be a non-empty list of {', '.join(ANNOTATION_KINDS)}; got {kv!r}")
            else:
                own_kinds = tuple(kv)
        own_ks = None
        if "kind_shots" in item:
            own_ks = tuple(_parse_kind_shots({"kind_shots": item["kind_shots"]}, problems, where=f"matrix.methods[{i}].kind_shots"))
        own_seeds = tuple(_parse_seeds(item["seeds"], problems, f"matrix.methods[{i}].seeds")) if "seeds" in item else None
        label = str(item.get("label", item["name"]))
        if "label" in item and (not label or any(c in label for c in '/\\:*?"<>|') or label.startswith(".")):
            problems.append(
                f"matrix.methods[{i}] label {label!r} cannot name a result file (no / \\ : * ? \" < > | or leading dot); "
                "give it a plain 'label'"
            )
        out.append(MethodEntry(item["name"], options, train, label, ckpt, own_bb, own_kinds, own_ks, own_seeds))
    labels = [m.label for m in out]
    for lab in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"two methods share the label '{lab}'; give each a distinct 'label'")
    return out


def _parse_backbones(value: Any, problems: list[str], where: str = "matrix.backbones") -> list[BackbonePair]:
    if not isinstance(value, list) or not value:
        problems.append(f"'{where}' must be a non-empty list of names or {{train: NAME, eval: NAME|[NAMES]}}")
        return []
    out: list[BackbonePair] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append(BackbonePair(item, item))
        elif isinstance(item, dict) and isinstance(item.get("train"), str):
            bad = sorted(set(item) - {"train", "eval"})
            if bad:
                problems.append(f"unknown key(s) {', '.join(bad)} in {where}[{i}] (valid: train, eval)")
            evals = item.get("eval", item["train"])
            evals = [evals] if isinstance(evals, str) else evals
            if not isinstance(evals, list) or not all(isinstance(e, str) for e in evals):
                problems.append(f"{where}[{i}].eval must be a name or a list of names")
                continue
            out.extend(BackbonePair(item["train"], e) for e in evals)
        else:
            problems.append(f"{where}[{i}] must be a name or a mapping {{train: NAME, eval: NAME|[NAMES]}}")
    return out


def _check_registries(suite: Suite, problems: list[str], *, check_data: bool, weights_dir: str | Path | None = None) -> None:
    from fssbench.backbones import backbone_names
    from fssbench.datasets import dataset_names, get_dataset, is_dataset_name
    from fssbench.methods import get_method_class, method_names
    from fssbench.protocols import get_protocol

    known_methods = method_names()
    known_bb = set(backbone_names())
    for m in suite.methods:
        if m.name not in known_methods:
            problems.append(f"unknown method '{m.name}' (known: {', '.join(known_methods)})")
            continue
        cls = get_method_class(m.name)
        problems.extend(cls.option_problems(m.options, m.label))
        if not suite.method_kind_shots(m):
            problems.append(f"method '{m.label}': none of its kinds {', '.join(m.kinds or ())} is in the matrix's kinds")
        for kind, shot in suite.method_kind_shots(m):
            why = cls.capabilities.supports(kind, shot)
            if why:
                problems.append(f"method '{m.name}' does not support {why}; drop it from the matrix or use matrix.kind_shots")
        if m.checkpoint is not None:
            cp = Path(m.checkpoint)
            if not cp.exists():
                problems.append(f"checkpoint '{cp}' of method '{m.label}' not found; put the decoder file there or fix the path")
            elif not cp.is_file():
                problems.append(f"checkpoint '{cp}' of method '{m.label}' is a folder, not a file; name the .pt file")
        why = cls.stitch_refused({**cls.default_config, **m.options})
        if why:
            for bb in suite.method_backbones(m):
                if bb.train != bb.eval:
                    problems.append(f"{why} ({bb.train} -> {bb.eval}); evaluate it on its training backbone")
                    break
    from fssbench.backbones import get_backbone_info

    for bb in suite.all_backbones():
        for name in sorted({bb.train, bb.eval}):
            base, variant = split_backbone(name)
            if base not in known_bb:
                problems.append(f"unknown backbone '{base}' (see `fssbench backbones`)")
            elif variant not in BACKBONE_VARIANTS:
                problems.append(f"unknown backbone variant '{name}'; the only variant is '{base}:random' (random init)")
    if check_data:
        from fssbench.backbones import weights_status

        needed = sorted({split_backbone(n)[0] for bb in suite.all_backbones() for n in (bb.train, bb.eval)
                         if split_backbone(n)[1] != "random" and split_backbone(n)[0] in known_bb})
        for base in needed:
            status = weights_status(base, weights_dir)
            if status is not None and not status.ok:
                problems.append(str(status.error()))
    for m in suite.methods:
        if m.name not in known_methods:
            continue
        caps = get_method_class(m.name).capabilities
        for kind in dict.fromkeys(k for k, _ in suite.method_kind_shots(m)):
            for name in sorted({bb.eval for bb in suite.method_backbones(m)}):
                base, _ = split_backbone(name)
                if base in known_bb:
                    why = caps.backbone_problem(kind, get_backbone_info(base))
                    if why:
                        problems.append(f"method '{m.label}': {why}; use a CLIP-style backbone for {kind} supports")
    used = [c for c in suite.aux_conditions if c != "none"]
    if used and "text" in suite.kinds:
        problems.append("auxiliary supports need support images: drop kind 'text' from the matrix or 'aux' conditions")
    if used and check_data:
        from fssbench.auxiliary.supplier import settings_problems

        problems.extend(settings_problems(suite.aux, used, weights_dir))
    try:
        get_protocol(suite.protocol.get("name", "hsnet"), **{k: v for k, v in suite.protocol.items() if k != "name"})
    except UserError as exc:
        problems.append(str(exc))
    except TypeError as exc:
        problems.append(f"protocol settings: {exc}")
    dname = suite.dataset.get("name")
    if not isinstance(dname, str) or not is_dataset_name(dname):
        problems.append(f"unknown dataset '{dname}' (known: {', '.join(dataset_names())})")
        return
    root = suite.dataset.get("root")
    if not isinstance(root, str):
        problems.append("'dataset.root' must be a path")
        return
    gen = suite.dataset.get("generate")
    if not (gen in (None, "synth") or (isinstance(gen, dict) and set(gen) <= {"seed", "size"})):
        problems.append(f"'dataset.generate' must be 'synth', a mapping {{seed, size}}, or absent; got {gen!r}")
    if check_data and Path(root).exists() and not Path(root).is_dir():
        problems.append(f"dataset root '{root}' is a file, not a folder; point dataset.root at the {dname} folder")
        return
    if check_data and gen is None and not Path(root).is_dir():
        problems.append(f"dataset root '{root}' does not exist; download {dname} there or fix dataset.root")
        return
    if check_data and Path(root).is_dir():
        ds = get_dataset(dname, root, split_dir=suite.dataset.get("split_dir"), **(suite.dataset.get("options") or {}))
        for f in suite.folds:
            if not 0 <= f < ds.n_folds:
                problems.append(f"fold {f} is out of range for {ds.name} (0..{ds.n_folds - 1})")
