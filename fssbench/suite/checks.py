"""Suite validation: what a parsed suite's names refer to (methods, backbones, datasets, protocols,
files), checked against the registries before any work, one line per problem.

The shape and types of a suite are the schema's (``fssbench.suite.schema``); these checks run
once the suite parses cleanly.
"""

from __future__ import annotations

from pathlib import Path

from fssbench.errors import UserError
from fssbench.suite.schema import BACKBONE_VARIANTS, Suite, split_backbone


def check_registries(suite: Suite, problems: list[str], *, check_data: bool, weights_dir: str | Path | None = None) -> None:
    """Add a line to ``problems`` for every name the suite uses that nothing is registered under
    (method, backbone, dataset, protocol), every combination a method refuses, and, with
    ``check_data``, every file that is not where the suite says (data root, weights, checkpoints)."""
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


__all__ = ["check_registries"]
