"""Finding and reading backbone weight files -- never from the network.

Where weights are looked for, in order (the first existing file wins):

1. the weights directory: the ``weights_dir`` argument / ``--weights-dir`` option, else the
   ``FSSBENCH_WEIGHTS`` environment variable. Each backbone accepts its official file name(s)
   (``WeightsSpec.filenames``, e.g. ``RN50.pt`` or ``resnet50-0676ba61.pth``) and, for any
   backbone, ``<backbone-name>.safetensors`` / ``.pth`` / ``.pt`` (e.g. ``clip-rn50.safetensors``);
2. the libraries' own caches, read-only: torch hub (``$TORCH_HOME/hub/checkpoints/<file>``,
   by default ``~/.cache/torch/hub/checkpoints``), open_clip's OpenAI cache (``~/.cache/clip``)
   and the Hugging Face hub cache (``$HF_HUB_CACHE``, by default ``~/.cache/huggingface/hub``);
3. nothing else: with no file a ``MissingFileError`` names the file and where to put it.
   Nothing is ever downloaded; random initialisation happens only on ``weights="random"``.

File formats read by :func:`load_state_dict_file`: a plain state dict saved with ``torch.save``
(read with ``weights_only=True``; ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and a
``module.`` prefix are unwrapped), ``.safetensors``, and TorchScript archives (OpenAI's CLIP
``.pt`` files), which are opened with ``torch.jit.load`` on the CPU and reduced to their state dict.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

from fssbench.errors import MissingFileError, UserError

ENV_VAR = "FSSBENCH_WEIGHTS"
GENERIC_SUFFIXES = (".safetensors", ".pth", ".pt")


@dataclass(frozen=True)
class WeightsSpec:
    """Where the weights of one backbone may be found (all look-ups are local).

    ``filenames``: names accepted inside the weights directory, preferred first (the first is the
    one named in error messages); may contain a sub-folder (``"clip-rn50/open_clip_model.safetensors"``).
    ``torch_hub``: file names inside torch hub's ``checkpoints`` folder.
    ``cache_paths``: further absolute paths (``~`` expanded), e.g. open_clip's ``~/.cache/clip/RN50.pt``
    or a file shipped inside a package.
    ``hf_hub``: ``(repo_id, filename)`` pairs looked up in the Hugging Face hub cache only.
    ``source``: where a user gets the file (a URL), shown in messages.
    """

    filenames: tuple[str, ...]
    torch_hub: tuple[str, ...] = ()
    cache_paths: tuple[str, ...] = ()
    hf_hub: tuple[tuple[str, str], ...] = ()
    source: str = ""


@dataclass(frozen=True)
class WeightsStatus:
    """Result of a weights look-up: ``found`` (a path) or ``None``; ``searched`` lists every candidate."""

    backbone: str
    found: Path | None
    weights_dir: Path | None
    expected_file: str
    searched: tuple[str, ...] = field(default_factory=tuple)
    source: str = ""

    @property
    def ok(self) -> bool:
        return self.found is not None

    @property
    def expected_location(self) -> str:
        """Where the user should put the file, as a short phrase."""
        if self.weights_dir is not None:
            return str(self.weights_dir / self.expected_file)
        return f"${ENV_VAR}/{self.expected_file}"

    def describe(self) -> str:
        """``found`` path, or where the file is expected."""
        if self.found is not None:
            return str(self.found)
        return f"missing: {self.expected_location}"

    def error(self) -> MissingFileError:
        """The one-line user error for a missing file.

        It names both ways to point at a folder (``--weights-dir``, which every command that
        builds backbones has, and ``$FSSBENCH_WEIGHTS``), and says so when the folder given is a file.
        """
        src = f" (download: {self.source})" if self.source else ""
        wdir = self.weights_dir
        if wdir is not None and wdir.exists() and not wdir.is_dir():
            return MissingFileError(
                f"weights folder {wdir} (--weights-dir / ${ENV_VAR}) is a file, not a folder: point it at the "
                f"folder that holds {self.expected_file}{src} for {self.backbone}"
            )
        if wdir is not None:
            return MissingFileError(
                f"weights for {self.backbone} not found: put {self.expected_file}{src} in {wdir} "
                f"(the folder given by --weights-dir or ${ENV_VAR}); nothing is downloaded"
            )
        return MissingFileError(
            f"weights for {self.backbone} not found: put {self.expected_file}{src} in a folder and pass it "
            f"with --weights-dir DIR or by setting ${ENV_VAR}=DIR (it is not set); nothing is downloaded"
        )


def resolve_weights_dir(weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The weights directory: the argument, else ``$FSSBENCH_WEIGHTS``, else ``None``."""
    if weights_dir is not None and str(weights_dir) != "":
        return Path(weights_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return None


def torch_hub_checkpoints_dir() -> Path:
    """torch hub's checkpoint cache (respects ``$TORCH_HOME``); computed without touching the network."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _hf_cached(repo_id: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except Exception:  # pragma: no cover - huggingface_hub missing
        return None
    try:
        hit = try_to_load_from_cache(repo_id=repo_id, filename=filename)
    except Exception:  # pragma: no cover - odd cache layouts
        return None
    return Path(hit) if isinstance(hit, str) else None


def candidate_paths(backbone: str, spec: WeightsSpec, weights_dir: Path | None) -> list[Path]:
    """Every local path searched for ``backbone``'s weights, in order (HF cache hits appended when present)."""
    cands: list[Path] = []
    if weights_dir is not None:
        names = list(spec.filenames) + [backbone + suffix for suffix in GENERIC_SUFFIXES]
        cands += [weights_dir / n for n in dict.fromkeys(names)]
    hub = torch_hub_checkpoints_dir()
    cands += [hub / n for n in spec.torch_hub]
    cands += [Path(p).expanduser() for p in spec.cache_paths]
    return cands


def find_weights(
    backbone: str, spec: WeightsSpec, weights_dir: str | os.PathLike[str] | None = None
) -> WeightsStatus:
    """Look for ``backbone``'s weights (see the module docstring for the order)."""
    wdir = resolve_weights_dir(weights_dir)
    searched: list[str] = []
    found: Path | None = None
    for path in candidate_paths(backbone, spec, wdir):
        searched.append(str(path))
        if path.is_file():
            found = path
            break
    if found is None:
        for repo_id, filename in spec.hf_hub:
            searched.append(f"hf-cache:{repo_id}/{filename}")
            hit = _hf_cached(repo_id, filename)
            if hit is not None and hit.is_file():
                found = hit
                break
    expected = spec.filenames[0] if spec.filenames else backbone + ".safetensors"
    return WeightsStatus(
        backbone=backbone,
        found=found,
        weights_dir=wdir,
        expected_file=expected,
        searched=tuple(searched),
        source=spec.source,
    )


# --- reading files -------------------------------------------------------------------------------
def is_torchscript_archive(path: str | os.PathLike[str]) -> bool:
    """True for a TorchScript zip archive (what ``torch.jit.save`` writes, e.g. OpenAI's CLIP ``.pt``)."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                inner = name.split("/", 1)[-1]
                if inner == "constants.pkl" or inner.startswith("code/"):
                    return True
    except (OSError, zipfile.BadZipFile):
        return False
    return False


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise UserError(f"weights file {path} holds a {type(obj).__name__}, not a state dict")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise UserError(f"weights file {path} holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def torch_load_problem(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in a few words.

    torch's own message advises re-running with ``weights_only=False``, which executes whatever
    the file's pickle says; fssbench never does that, so the advice is replaced by what is wrong
    with the file.
    """
    text = _ANSI.sub("", str(exc))
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (
                f"it holds pickled Python objects besides tensors ({found.group(1)}), which fssbench never "
                "unpickles because unpickling can run code"
            )
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
        why = " ".join(detail.group(1).split()) if detail else "unreadable pickle"
        return f"it is corrupt or not a PyTorch file ({why})"
    if isinstance(exc, EOFError) or "central directory" in text or "zip archive" in text:
        return "it is truncated or corrupt (an interrupted copy or save)"
    if "PytorchStreamReader" in text:
        return "it is a zip archive but not a PyTorch file (torch.save writes a data.pkl inside)"
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(exc).__name__
    if "weights_only" in first:  # torch's advice to load unsafely: never shown
        return "it is not a plain PyTorch file of tensors"
    return f"it is corrupt or not a PyTorch file ({first})"


def read_torch_file(path: str | os.PathLike[str], *, what: str = "checkpoint", fix: str = "replace it") -> object:
    """``torch.load`` on the CPU with ``weights_only=True``, every failure one ``UserError`` line:
    ``{what} {path} ...: <why>; {fix}`` (a folder, a missing file, truncated, pickled objects)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder, not a file; {fix}")
    if not p.is_file():
        if p.exists():
            raise UserError(f"{what} {p} is not a regular file; {fix}")
        raise MissingFileError(f"{what} {p} not found; {fix}")
    if is_torchscript_archive(p):  # torch.load would warn, then advise loading it unsafely
        raise UserError(
            f"{what} {p} is a TorchScript archive (a saved program, what torch.jit.save writes), not a "
            f"plain state dict of tensors (what torch.save(model.state_dict()) writes); {fix}"
        )
    try:
        with warnings.catch_warnings():  # torch's notes on odd files are replaced by the line below
            warnings.simplefilter("ignore")
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise UserError(f"cannot read {what} {p}: {torch_load_problem(exc)}; {fix}") from None


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict (plain ``torch.save`` file, ``.safetensors`` or TorchScript archive) on the CPU."""
    p = Path(path)
    fix = "replace it with the file from the official download"
    if p.is_dir():
        raise UserError(f"weights file {p} is a folder, not a file; pass the file itself or use it as --weights-dir")
    if not p.is_file():
        if p.exists():
            raise UserError(f"weights file {p} is not a regular file; {fix}")
        raise MissingFileError(f"weights file {p} not found")
    if p.suffix not in (".safetensors",) and not is_torchscript_archive(p):
        return _unwrap(read_torch_file(p, what="weights file", fix=fix), p)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return _unwrap(load_file(str(p), device="cpu"), p)
        with warnings.catch_warnings():  # a TorchScript archive (OpenAI's CLIP .pt files)
            warnings.simplefilter("ignore")  # torch.jit.* deprecation notices
            module = torch.jit.load(str(p), map_location="cpu")
        return _unwrap(dict(module.state_dict()), p)
    except UserError:
        raise
    except Exception as exc:  # corrupt / foreign files: one line, not a traceback
        msg = " ".join(_ANSI.sub("", str(exc)).strip().splitlines()[0].split()) if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read weights file {p}: {msg}; {fix}") from None


def load_weights_into(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    path: str | os.PathLike[str],
    backbone: str,
    ignore_prefixes: Iterable[str] = (),
    ignore_keys: Iterable[str] = (),
) -> None:
    """Strictly load ``state_dict`` into ``module`` (dtypes are converted to the module's).

    Keys starting with ``ignore_prefixes`` or listed in ``ignore_keys`` (heads the backbone does not
    keep, metadata entries) are dropped first; any other mismatch is a one-line ``UserError``.
    """
    prefixes = tuple(ignore_prefixes)
    skip = set(ignore_keys)
    sd = {k: v for k, v in state_dict.items() if k not in skip and not (prefixes and k.startswith(prefixes))}
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shape:
            k = shape[0]
            parts.append(f"{len(shape)} shape mismatches (e.g. {k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)})")
        raise UserError(f"weights file {path} does not fit {backbone}: " + "; ".join(parts))
    module.load_state_dict(sd, strict=True)
