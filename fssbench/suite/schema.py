"""Suite schema: what a suite file says, as typed dataclasses, and the parsing of a (profile-merged)
suite document into them. Every problem of shape or type is one line; what the names refer to
(methods, backbones, datasets, files) is checked by ``fssbench.suite.checks``, and the matrix is
turned into runs by ``fssbench.suite.expand``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fssbench.episode import ANNOTATION_KINDS
from fssbench.errors import UserError
from fssbench.methods import TrainConfig
from fssbench.options import TYPE_NAMES, type_ok
from fssbench.resources import DEFAULT_RESOURCES, Resources, parse_resources

TOP_KEYS = {"name", "description", "matrix", "dataset", "protocol", "episodes", "train", "eval", "aux", "resources", "profiles", "default_profile"}
MATRIX_KEYS = {"methods", "backbones", "folds", "shots", "kinds", "kind_shots", "seeds", "supports", "aux"}
DATASET_KEYS = {"name", "root", "split_dir", "generate", "options"}
METHOD_KEYS = {"name", "options", "train", "label", "checkpoint", "backbones", "kinds", "kind_shots", "seeds"}
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


@dataclass(frozen=True)
class RunConfig:
    """Everything one run is: the resolved settings of one cell of the matrix. Written into its
    result file as :meth:`as_dict` (these keys, in this order); the run id hashes all of them but
    the presentation keys."""

    method: str
    label: str
    method_rank: int
    method_options: dict[str, Any]
    train_backbone: str
    eval_backbone: str
    dataset: str
    root: str
    split_dir: str | None
    dataset_options: dict[str, Any]
    fold: int
    shot: int
    kind: str
    seeds: dict[str, int]
    protocol: str
    protocol_settings: dict[str, Any]
    episodes: int
    decoder_id: str | None
    checkpoint: str | None
    """A released decoder file: evaluated as it is, never trained."""
    supports: str
    incompatible: str | None
    """Why a stitched cell cannot be evaluated (kept in its result), else None."""
    aux: dict[str, Any] | None = None
    """The run's auxiliary-support settings (``fssbench.auxiliary``); absent from the dict without them."""

    def as_dict(self) -> dict[str, Any]:
        """The configuration as written in the run's result file (``aux`` only when set)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.aux is None:
            del d["aux"]
        return d

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: everything but the presentation keys."""
        return {k: v for k, v in self.as_dict().items() if k not in PRESENTATION_KEYS}


@dataclass
class Run:
    """One evaluation of one method on one cell of the matrix."""

    run_id: str
    decoder_id: str | None
    config: RunConfig
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
    runs: tuple[Run, ...] = ()
    """The matrix expanded (``fssbench.suite.expand``), once, when the suite loads."""

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
        """Every run of the matrix, in a stable order (``fssbench.suite.expand``)."""
        return list(self.runs)


def _is_int(v: Any) -> bool:
    return type_ok(v, int)


def parse_suite(doc: dict[str, Any], path: Path, profile: str | None, problems: list[str]) -> Suite:
    """The suite a (profile-merged) document describes; every problem of its shape and types is
    added to ``problems`` (one line each) and a usable stand-in value parsed in its place."""
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
    train = _settings(doc, "train", TRAIN_TYPES, "a mapping of training settings", problems)
    for i, m in enumerate(methods):
        _check_types(m.train, TRAIN_TYPES, f"matrix.methods[{i}].train", problems)
    ev = _settings(doc, "eval", EVAL_TYPES, "a mapping", problems)
    fc = ev.get("feature_cache_gb", 0)
    if isinstance(fc, (int, float)) and not isinstance(fc, bool) and fc < 0:
        problems.append(f"'eval.feature_cache_gb' must be >= 0 (0 turns the feature cache off), got {fc!r}")
    _check_types(protocol, PROTOCOL_TYPES, "protocol", problems)
    resources = parse_resources(doc.get("resources"), problems)

    suite = Suite(
        name=name,
        description=str(doc.get("description", "")),
        profile=profile,
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
    return suite


TRAIN_TYPES = {f.name: type(getattr(TrainConfig(), f.name)) for f in fields(TrainConfig)}


def _settings(doc: dict[str, Any], key: str, types: dict[str, type], what: str, problems: list[str]) -> dict[str, Any]:
    """A top-level settings mapping (``train``, ``eval``): known keys only, each of its type."""
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        problems.append(f"'{key}' must be {what}")
        return {}
    for k in sorted(set(value) - set(types)):
        problems.append(f"unknown key '{key}.{k}' (valid: {', '.join(sorted(types))})")
    _check_types(value, types, key, problems)
    return value


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
