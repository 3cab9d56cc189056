"""The results store: one JSON file per run, written atomically, read back as data.

A run file holds the resolved configuration, the hash of the episode list it was scored on, one
record per episode (intersections/unions, so any metric can be recomputed later), the fold
metrics with bootstrap intervals, and full provenance (code version, environment). Files are
written to a temporary name and renamed into place, so a killed run never leaves a half-written
result, and a file that fails to parse is reported, never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fssbench import __version__
from fssbench.dispatch import dispatch_provenance
from fssbench.episodes import atomic_write_text
from fssbench.errors import UserError
from fssbench.metrics import EpisodeRecord

RESULT_FORMAT = "fssbench.result/1"
CONFIG_KEYS = ("method", "train_backbone", "eval_backbone", "dataset", "fold", "shot", "kind", "seeds", "protocol")
"""Keys of ``RunResult.config`` that identify a cell of a results table."""


@dataclass
class RunResult:
    run_id: str
    suite: str
    config: dict[str, Any]
    episode_hash: str
    metrics: dict[str, Any]
    records: list[EpisodeRecord]
    provenance: dict[str, Any] = field(default_factory=dict)
    decoder: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    """``ok``; or ``incompatible``: the method cannot pair this training and evaluation backbone
    (``reason`` says why), so the run has no records and its table cell says so."""
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "status": self.status,
            "reason": self.reason,
            "run_id": self.run_id,
            "suite": self.suite,
            "config": self.config,
            "episode_hash": self.episode_hash,
            "metrics": self.metrics,
            "decoder": self.decoder,
            "provenance": self.provenance,
            "episodes": [r.to_dict() for r in self.records],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        if d.get("format") != RESULT_FORMAT:
            raise ValueError(f"not a {RESULT_FORMAT} file")
        return cls(
            run_id=d["run_id"],
            suite=d["suite"],
            config=d["config"],
            episode_hash=d["episode_hash"],
            metrics=d["metrics"],
            records=[EpisodeRecord.from_dict(r) for r in d["episodes"]],
            provenance=d.get("provenance", {}),
            decoder=d.get("decoder", {}),
            status=d.get("status", "ok"),
            reason=d.get("reason"),
        )

    def save(self, directory: str | Path) -> Path:
        return atomic_write_text(Path(directory) / f"{self.run_id}.json", json.dumps(self.to_dict(), indent=1) + "\n")


def result_path(directory: str | Path, run_id: str) -> Path:
    return Path(directory) / f"{run_id}.json"


def load_result(path: str | Path) -> RunResult:
    path = Path(path)
    try:
        return RunResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"result file '{path}' is unreadable ({exc}); delete it and re-run the suite") from None


def iter_results(directory: str | Path) -> Iterator[RunResult]:
    """Every finished run in ``directory`` (temporary files of killed runs are never read)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"results folder '{directory}' does not exist; run `fssbench run SUITE` first")
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith("."):
            continue
        yield load_result(path)


def git_revision(root: str | Path | None = None) -> dict[str, Any]:
    """Commit of the code that ran, and whether the tree differed from it (edits or untracked files)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain"],  # untracked (not ignored) files count: they run too
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": dirty if commit else None}


def environment() -> dict[str, Any]:
    """What the literature blames 0.3-2 mIoU on: library versions, device, determinism flags."""
    import numpy as np
    import torch

    env: dict[str, Any] = {
        "fssbench": __version__,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "gpu_count": torch.cuda.device_count(),
        "torch_threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }
    env |= dispatch_provenance()
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (weights, decoders: provenance and cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_artefacts(path: Path, arts: dict[int, dict[str, np.ndarray]]) -> None:
    """One ``.npz`` next to a result file: ``ep<id>/<name>`` arrays (fp16 for float maps), atomic."""
    flat = {}
    for eid, arrays in sorted(arts.items()):
        for k, v in arrays.items():
            flat[f"ep{eid}/{k}"] = v.astype(np.float16) if v.dtype.kind == "f" else v
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def read_artefacts(path: Path) -> dict[int, dict[str, np.ndarray]]:
    """``{episode id: {name: array}}`` of an artefacts file written by :func:`save_artefacts`."""
    out: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            ep, _, name = key.partition("/")
            out.setdefault(int(ep[2:]), {})[name] = z[key]
    return out
