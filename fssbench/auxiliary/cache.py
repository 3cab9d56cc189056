"""On-disk cache of generated auxiliary images.

Key: the canonical JSON of (support, class, condition, the generator's identity -- backend, its
weights' hash, prompt and settings --, seed), hashed with SHA-256; the image is
``<root>/<hash[:2]>/<hash>.png`` (lossless), written to a temporary name and renamed into place,
so a killed generation leaves either a whole image or none, and the next run generates only what
is missing. A suite therefore never generates the same image twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def cache_key(support: str, class_id: int, condition: str, identity: dict[str, Any], seed: int) -> str:
    """The SHA-256 key of one auxiliary image."""
    payload = {
        "support": support,
        "class_id": int(class_id),
        "condition": condition,
        "generator": identity,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AuxCache:
    """Generated images by key (see the module doc); ``hits`` / ``writes`` count this process's use."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.writes = 0

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def has(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> np.ndarray | None:
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except OSError:  # unreadable (should not happen: writes are atomic): generate it again
            p.unlink(missing_ok=True)
            return None
        self.hits += 1
        return arr

    def put(self, key: str, image: np.ndarray) -> Path:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
        tmp.replace(p)
        self.writes += 1
        return p
