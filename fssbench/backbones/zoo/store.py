"""Where zoo checkpoints live, how they are written, checked and loaded.

Two places hold checkpoints, each a folder with ``<name>.pt`` files, a ``zoo.json`` manifest
(SHA-256, sizes, config, check figures) and ``SHA256SUMS`` (``sha256sum -c`` format):

1. the **cache**: ``$FSSBENCH_CACHE/zoo`` if ``FSSBENCH_CACHE`` is set, else ``~/.cache/fssbench/zoo``;
   ``fssbench zoo build`` writes here by default;
2. the **shipped** checkpoints inside the package: ``fssbench/backbones/zoo/checkpoints``.

Loading prefers the cache, then the shipped file. A checkpoint is a plain state dict (float
tensors stored as fp16, upcast on load) read with ``torch.load(..., weights_only=True)`` and
verified against the SHA-256 recorded in the ``zoo.json`` next to it. The file bytes are
deterministic: the archive is written through memory so its inner folder name never depends on
the file name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fssbench.backbones.zoo.models import ZooBackbone, ZooCLIP, ZooResNetClassifier, ZooViT
from fssbench.backbones.zoo.specs import IMAGE_SIZE, TEXT_VOCAB, ZOO, ZooSpec, get_spec
from fssbench.errors import MissingFileError, UserError

SHIPPED_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = "zoo.json"
SUMS = "SHA256SUMS"
NUM_PRETRAIN_CLASSES = 48


def cache_dir() -> Path:
    env = os.environ.get("FSSBENCH_CACHE")
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "fssbench"
    return base / "zoo"


def checkpoint_file(name: str) -> str:
    return f"{name}.pt"


# --------------------------------------------------------------------------- networks


def build_network(spec: ZooSpec, num_classes: int = NUM_PRETRAIN_CLASSES) -> nn.Module:
    """The full pretraining network of ``spec`` (trunk + heads), randomly initialised."""
    c = spec.config
    if spec.family == "resnet":
        return ZooResNetClassifier(num_classes, c["width"], c["layers"], aux_seg=spec.aux_seg > 0)
    if spec.family == "vit":
        return ZooViT(
            num_classes, IMAGE_SIZE, c["patch"], c["dim"], c["depth"], c["heads"], c["blocks_per_stage"]
        )
    if spec.family == "clip":
        return ZooCLIP(
            TEXT_VOCAB,
            width=c["width"],
            layers=c["layers"],
            image_size=IMAGE_SIZE,
            embed_dim=c["embed_dim"],
            context_length=c["context_length"],
            text_width=c["text_width"],
            text_heads=c["text_heads"],
            text_layers=c["text_layers"],
        )
    raise ValueError(spec.family)


def wrap_backbone(spec: ZooSpec, net: nn.Module) -> ZooBackbone:
    trunk = net if isinstance(net, ZooViT) else net.trunk  # type: ignore[union-attr]
    meta = {"model": spec.model, "upgrade": spec.upgrade, "config": dict(spec.config)}
    return ZooBackbone(spec.name, net, trunk, spec.arch, spec.pretraining, meta)


def num_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------- files


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def to_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 copies of the floating tensors (contiguous, detached), integer tensors as they are."""
    return {
        k: (v.detach().to(torch.float16) if v.is_floating_point() else v.detach()).contiguous().clone()
        for k, v in state.items()
    }


def checkpoint_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(to_storage(state), buf)
    return buf.getvalue()


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        return {"format": 1, "models": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"zoo manifest {path} is corrupt ({exc.msg}); rebuild with `fssbench zoo build`") from exc


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    order = list(ZOO)
    models = dict(sorted(manifest.get("models", {}).items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99))
    manifest = {**manifest, "models": models}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    lines = [f"{m['sha256']}  {m['file']}\n" for m in models.values()]
    (folder / SUMS).write_text("".join(lines))


def locate(name: str, weights_dir: str | os.PathLike[str] | None = None) -> tuple[str, Path] | None:
    """``(where, path)`` of ``name``'s checkpoint: ``weights_dir`` if given, else the cache, else
    the shipped copy; ``None`` if none exists."""
    get_spec(name)
    places = [("dir", Path(weights_dir).expanduser())] if weights_dir else [("cache", cache_dir()), ("shipped", SHIPPED_DIR)]
    for where, folder in places:
        path = folder / checkpoint_file(name)
        if path.is_file():
            return where, path
    return None


def missing_error(name: str, weights_dir: str | os.PathLike[str] | None = None) -> MissingFileError:
    where = str(weights_dir) if weights_dir else f"{cache_dir()} or the shipped checkpoints"
    return MissingFileError(
        f"zoo checkpoint {checkpoint_file(name)} for {name} not found in {where}: run `fssbench zoo build --only {name}`"
    )


def verify(path: Path, name: str) -> dict[str, Any] | None:
    """Check ``path`` against the ``zoo.json`` in its folder; returns its manifest entry (``None``
    when the folder has no manifest entry for it, e.g. a file copied by hand)."""
    entry = read_manifest(path.parent).get("models", {}).get(name)
    if entry is None or entry.get("file") != path.name:
        return None
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise UserError(
            f"zoo checkpoint {path} fails its checksum ({digest[:12]} != {entry['sha256'][:12]}); "
            f"rebuild it with `fssbench zoo build --only {name}`"
        )
    return entry


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from fssbench.backbones.weights import read_torch_file

    sd = read_torch_file(path, what="zoo checkpoint", fix=f"rebuild it with `fssbench zoo build --only {path.stem}`")
    if not isinstance(sd, dict):
        raise UserError(f"zoo checkpoint {path} is not a state dict")
    return sd


def load_network(name: str, path: Path, check: bool = True) -> nn.Module:
    """Build ``name``'s network and load ``path`` (verified against its manifest when ``check``)."""
    spec = get_spec(name)
    if check:
        verify(path, name)
    net = build_network(spec)
    sd = load_state(path)
    from fssbench.backbones.weights import load_weights_into

    load_weights_into(net, sd, path=path, backbone=name)  # strict; fp16 upcast to fp32
    return net


def load_zoo_backbone(
    name: str, weights: str | os.PathLike[str] = "auto", weights_dir: str | os.PathLike[str] | None = None
) -> ZooBackbone:
    """A frozen zoo backbone. ``weights``: ``"auto"`` (cache, then shipped; or ``weights_dir``),
    ``"random"``, or a checkpoint path."""
    spec = get_spec(name)
    if weights == "random":
        torch.manual_seed(spec.seed)
        bb = wrap_backbone(spec, build_network(spec))
        bb.pretraining = "random"
        return bb
    if weights == "auto":
        found = locate(name, weights_dir)
        if found is None:
            raise missing_error(name, weights_dir)
        path = found[1]
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise missing_error(name, path.parent)
    bb = wrap_backbone(spec, load_network(name, path))
    bb.weights_path = path  # type: ignore[attr-defined]
    return bb
