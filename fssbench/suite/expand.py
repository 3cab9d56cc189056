"""Suite expansion: the matrix of a parsed suite as runs, each with a stable id.

Each expanded run has a stable id: a readable prefix plus a hash of its resolved configuration
(:meth:`~fssbench.suite.schema.RunConfig.identity`). Runs that share a trained decoder (same method,
options, training settings, training backbone, data, fold, seed) share a ``decoder_id`` so the
decoder is trained once and reused for every evaluation that needs it (other shots, annotation
kinds, or evaluation backbones).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from fssbench.auxiliary.supplier import run_aux_config
from fssbench.backbones import get_backbone_info
from fssbench.methods import get_method_class
from fssbench.protocols import get_protocol
from fssbench.suite.schema import SEED_KEYS, Run, RunConfig, Suite, canonical_hash, split_backbone


def expand_suite(suite: Suite) -> list[Run]:
    """Every run of the matrix, in a stable order (method, backbones, fold, seeds, kind/shot, supports).

    The decoder id hashes only what training depends on (method, its training options, the
    training settings, the training backbone, data, fold, training seed, protocol); evaluation
    options, the evaluation backbone, kind, shot, supports and the episode/sampling seeds only
    change the run id, so they never cause re-training.
    """
    proto = get_protocol(suite.protocol.get("name", "hsnet"), **{k: v for k, v in suite.protocol.items() if k != "name"})
    n_eps = suite.episodes if suite.episodes is not None else proto.episodes_for(suite.dataset["name"])
    data = {"name": suite.dataset["name"], "root": str(suite.dataset["root"])}
    if suite.dataset.get("split_dir"):
        data["split_dir"] = str(suite.dataset["split_dir"])
    if suite.dataset.get("options"):
        data["options"] = dict(suite.dataset["options"])
    runs: list[Run] = []
    for rank, m in enumerate(suite.methods):
        cls = get_method_class(m.name)
        options = cls.resolved_options(m.options)
        trains = cls.capabilities.trains and m.checkpoint is None
        tcfg = {**_dataclass_dict(cls.default_train), **suite.train, **m.train} if trains else None
        for bb in suite.method_backbones(m):
            incompatible = None
            if bb.train != bb.eval:
                incompatible = cls.stitch_incompatible(
                    options, get_backbone_info(split_backbone(bb.train)[0]), get_backbone_info(split_backbone(bb.eval)[0])
                )
            for fold in suite.folds:
                for seeds in suite.method_seeds(m):
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
                    for kind, shot in suite.method_kind_shots(m):
                        for supports, aux_cond in [(sp, a) for sp in suite.supports for a in suite.aux_conditions]:
                            stitch = "" if bb.train == bb.eval else f"-to-{bb.eval}"
                            ctl = "" if supports == "own" else f"-{supports}"
                            aux = None
                            if aux_cond != "none":  # only then: runs without aux keep their ids
                                aux = run_aux_config(suite.aux, aux_cond)
                                ctl += f"-aux{suite.aux['aux_shots']}{aux_cond}"
                            config = RunConfig(
                                method=m.name,
                                label=m.label,
                                method_rank=rank,
                                method_options=options,
                                train_backbone=bb.train,
                                eval_backbone=bb.eval,
                                dataset=data["name"],
                                root=data["root"],
                                split_dir=data.get("split_dir"),
                                dataset_options=data.get("options", {}),
                                fold=fold,
                                shot=shot,
                                kind=kind,
                                seeds=dict(seeds),
                                protocol=proto.name,
                                protocol_settings=proto.to_dict(),
                                episodes=n_eps,
                                decoder_id=decoder_id,
                                checkpoint=m.checkpoint,
                                supports=supports,
                                incompatible=incompatible,
                                aux=aux,
                            )
                            run_id = (
                                f"{m.label}-{bb.train}{stitch}-f{fold}-{shot}shot-{kind}{ctl}-s{seed_tag(seeds)}-"
                                f"{canonical_hash(config.identity(), 10)}"
                            ).replace(":", "+")
                            runs.append(Run(run_id, decoder_id, config, tcfg))
    return runs


def seed_tag(seeds: dict[str, int]) -> str:
    """``0`` when the three seeds agree, else ``e0t1s2`` (episodes, train, sampling)."""
    vals = [seeds[k] for k in SEED_KEYS]
    return str(vals[0]) if len(set(vals)) == 1 else "".join(f"{k[0]}{v}" for k, v in zip(SEED_KEYS, vals))


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _dataclass_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


__all__ = ["expand_suite", "seed_tag"]
