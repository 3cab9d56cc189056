"""Decoder and training checkpoint files: written atomically, read through one set of checks.

A decoder file (``best.pt``) names the method and the training options it was trained for::

    {"format": "fssbench.decoder/1", "method": "hm", "options": {...}, "state": {...}, ...}

because two methods can share an architecture (HSNet-HM has exactly HSNet's parameters): a bare
state dict would load into the wrong method without complaint. A training checkpoint
(``last.pt``, format ``fssbench.train/1``) carries the same three fields plus the optimiser,
schedule and RNG states for resuming.

Reading is checked in this order, each failure a one-line ``UserError`` naming the file, the
problem and the fix: missing file; truncated or not a torch file; a pickle that would run code
(``weights_only=True`` refuses it, and we never fall back to unsafe loading); wrong format;
another method; other training options; keys/shapes that do not fit the method (strict).

Bare state dicts (``best.pt`` of fssbench before decoder files named their method) are refused
even when their keys fit: the method they were trained for cannot be checked, which is the very
mistake this format exists to catch. The fix is to retrain (the decoder folder is deleted).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from fssbench.backbones.weights import read_torch_file
from fssbench.errors import UserError
from fssbench.methods import Method

DECODER_FORMAT = "fssbench.decoder/1"
TRAIN_FORMAT = "fssbench.train/1"

_RETRAIN = "delete {folder} and run again to retrain it"


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary name, fsync, rename: a reader (or a resume after SIGKILL or a
    power cut) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def plain_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Options as the builtins ``weights_only`` unpickling accepts (tuples as lists, numpy scalars
    as Python numbers), so a decoder file never needs unsafe loading and compares equal on reading."""

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if hasattr(v, "item"):  # numpy / torch scalars
            return plain(v.item())
        return repr(v)

    return {str(k): plain(v) for k, v in options.items()}


def decoder_record(method: Method) -> dict[str, Any]:
    """The identity and learned state of ``method``: the fields every fssbench checkpoint holds."""
    return {
        "method": method.name,
        "options": plain_options(method.training_options(method.options)),
        "state": method.trainable_state(),
    }


def save_decoder(method: Method, path: str | Path, **extra: Any) -> None:
    """Write ``method``'s decoder file atomically; ``extra`` adds plain fields (epoch, selection)."""
    atomic_save({"format": DECODER_FORMAT, **decoder_record(method), **extra}, path)


def load_decoder(path: str | Path, method: Method, *, what: str = "decoder", fix: str | None = None) -> None:
    """Check the decoder file ``path`` against ``method`` and load its state into it.

    ``what`` names the file in error messages (``"decoder"``, ``"released decoder"``); ``fix`` is
    what they advise for a missing, broken or foreign file (default: delete the decoder folder,
    ``path``'s parent, and run again to retrain it; a user's own file wants e.g. "pass a decoder
    file written by fssbench")."""
    path = Path(path)
    ckpt = read_checkpoint(path, method, what=what, fmt=DECODER_FORMAT, fix=fix or _RETRAIN.format(folder=path.parent))
    method.load_trainable_state(ckpt["state"])


def read_checkpoint(path: Path, method: Method, *, what: str, fmt: str, fix: str) -> dict[str, Any]:
    """Load ``path`` safely and run every check of the module docstring; ``fix`` ends the messages
    about a broken or foreign file. Returns the checkpoint dict (its ``state`` not yet loaded)."""
    if path.is_dir():
        raise UserError(f"{what} file {path} is a folder, not a file; {fix}")
    if not path.is_file():
        raise UserError(f"{what} file {path} does not exist; {fix}")
    ckpt = read_torch_file(path, what=f"{what} file", fix=fix)

    if not isinstance(ckpt, dict) or "format" not in ckpt:
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            problem = "is a bare state dict (from an fssbench that did not record the method), so the method it was trained for cannot be checked"
        elif isinstance(ckpt, dict) and "optimizer" in ckpt:
            problem = "is a training checkpoint of an older fssbench (no format field)"
        else:
            problem = f"is not an fssbench checkpoint (it holds a {type(ckpt).__name__} without a 'format' field)"
        raise UserError(f"{what} file {path} {problem}; {fix}")
    if ckpt["format"] != fmt:
        raise UserError(f"{what} file {path} has format {ckpt['format']!r}, expected {fmt!r}; {fix}")
    missing = [k for k in ("method", "options", "state") if k not in ckpt]
    if missing or not isinstance(ckpt["state"], dict):
        raise UserError(f"{what} file {path} lacks {', '.join(missing) or 'a state dict'}; {fix}")

    if ckpt["method"] != method.name:
        raise UserError(
            f"{what} file {path} was trained for method '{ckpt['method']}', not '{method.name}'; "
            f"evaluate it with method '{ckpt['method']}', or {fix}"
        )
    ours = plain_options(method.training_options(method.options))
    theirs = ckpt["options"] if isinstance(ckpt["options"], dict) else {}
    diff = [k for k in sorted(set(ours) | set(theirs)) if not _same(ours.get(k, "<unset>"), theirs.get(k, "<unset>"))]
    if diff:
        shown = ", ".join(f"{k}={theirs.get(k, '<unset>')!r} (method has {ours.get(k, '<unset>')!r})" for k in diff[:3])
        raise UserError(
            f"{what} file {path} was trained with other options of '{method.name}': {shown}; "
            f"use the options it was trained with, or {fix}"
        )
    problem = state_mismatch(ckpt["state"], method.trainable_state())
    if problem:
        raise UserError(f"{what} file {path} does not fit method '{method.name}': {problem}; {fix}")
    return ckpt


def state_mismatch(state: Mapping[str, Any], own: Mapping[str, torch.Tensor], *, show: int = 3) -> str | None:
    """``None`` when ``state`` has exactly ``own``'s keys and shapes, else the first few differences."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [
        k for k in own
        if k in state and (not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(own[k].shape))
    ]
    parts = []

    def names(keys: list[str]) -> str:
        more = f", ... (+{len(keys) - show})" if len(keys) > show else ""
        return ", ".join(keys[:show]) + more

    if missing:
        parts.append(f"{len(missing)} missing key(s) {names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {names(unexpected)}")
    if shape:
        shown = ", ".join(
            f"{k} {tuple(getattr(state[k], 'shape', ()))} in the file vs {tuple(own[k].shape)}" for k in shape[:show]
        )
        parts.append(f"{len(shape)} shape mismatch(es) {shown}{', ...' if len(shape) > show else ''}")
    return "; ".join(parts) or None


def _same(a: Any, b: Any) -> bool:
    """Option equality where NaN equals NaN and 1 equals 1.0 (YAML may give either)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b
