"""Training engine: checkpoint contents, NaN validation never selected, SIGKILL + resume bit-equal."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fssbench.engine import train as train_mod
from fssbench.engine.checkpoint import DECODER_FORMAT, TRAIN_FORMAT
from fssbench.engine.train import shard_of, train
from fssbench.errors import UserError
from fssbench.methods import TrainConfig
from fssbench.protocols import get_protocol
from tests.toy import ToyBackbone, ToyDataset, ToyDecoder

REPO = Path(__file__).resolve().parent.parent


class NoisyToyDecoder(ToyDecoder):
    """The toy decoder with a loss that draws from every global RNG (torch dropout, numpy, Python
    ``random``): resuming reproduces its training only if all three RNG states are restored."""

    name: ClassVar[str] = "toy-noisy"

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        proto_logits = self.predict(batch)
        logits = F.dropout(proto_logits, p=0.3, training=True)
        target = batch.query_mask.clone()
        target[batch.query_ignore] = 255
        scale = 1.0 + 0.5 * float(np.random.rand()) + 0.5 * random.random()
        loss = F.cross_entropy(logits, target, ignore_index=255) * scale
        return loss, {"ce": float(loss.detach())}


def _cfg(epochs: int = 3) -> TrainConfig:
    return TrainConfig(epochs=epochs, episodes_per_epoch=8, batch_size=4, val_episodes=6, lr=0.02)


def run_training(out: str, root: str, stall_after: int = 0) -> None:
    """One training of the noisy toy decoder on the synthetic PASCAL world (real files, the cache and
    the prefetch thread). ``stall_after`` > 0: after that many training episodes, write
    ``out/stalled`` and sleep, so the test can SIGKILL it at a known point mid-epoch."""
    from fssbench.datasets import get_dataset
    from fssbench.engine.train import seed_everything

    torch.set_num_threads(1)
    seen = [0]

    def on_step(n: int) -> None:
        seen[0] += n
        if stall_after and seen[0] >= stall_after:
            (Path(out) / "stalled").write_text(str(seen[0]))
            time.sleep(600)

    backbone = ToyBackbone()
    seed_everything(0)
    method = NoisyToyDecoder(backbone)
    # Selection by the real validation plus the distance moved from the initial weights: that rises
    # epoch after epoch, so the best epoch is the last one and its best.pt is written after the kill
    # (the toy decoder's validation mIoU alone is flat on this data and would pick epoch 0).
    start = {k: v.clone() for k, v in method.trainable_state().items()}
    validate = train_mod.evaluate

    def evaluate(m: Any, *args: Any, **kwargs: Any) -> Any:
        out = validate(m, *args, **kwargs)
        moved = sum(float((v - start[k]).norm()) for k, v in m.trainable_state().items())
        out.metrics["miou"] += 100.0 * moved
        return out

    train_mod.evaluate = evaluate  # only ever in the subprocess this runs in
    train(method, get_dataset("pascal", root), 1, get_protocol("hsnet", img_size=32), _cfg(), out,
          seed=3, val_episodes=6, on_step=on_step)


def _subprocess(out: Path, root: Path, stall_after: int = 0) -> subprocess.Popen:
    code = f"from tests.test_train import run_training; run_training({str(out)!r}, {str(root)!r}, {stall_after})"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from fssbench.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, seed=0, size="small", force=True, show_progress=False)
    return root


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_mid_epoch_then_resume_is_bit_equal(tmp_path, synth_root):
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    cut_dir.mkdir()
    ref = _subprocess(ref_dir, synth_root)
    # 8 episodes per epoch in batches of 4: stall after the first batch of epoch 1, i.e. after the
    # epoch-0 checkpoint is on disk and with one optimiser step of epoch 1 taken (and lost).
    cut = _subprocess(cut_dir, synth_root, stall_after=12)
    try:
        deadline = time.time() + 180
        while not (cut_dir / "stalled").exists() and cut.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert (cut_dir / "stalled").exists(), cut.stderr.read() if cut.poll() is not None else "never stalled"
        assert _load(cut_dir / "last.pt")["epoch"] == 0
    finally:
        cut.send_signal(signal.SIGKILL)
        cut.wait()
        cut.stderr.close()
        if ref.poll() is None and not (cut_dir / "stalled").exists():
            ref.kill()
    resumed = _subprocess(cut_dir, synth_root)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]

    for name in ("best.pt", "last.pt"):
        a, b = _load(ref_dir / name), _load(cut_dir / name)
        assert _equal_states(a["state"], b["state"]), f"{name}: resumed weights differ from an uninterrupted run"
    a, b = _load(ref_dir / "last.pt"), _load(cut_dir / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["best_epoch"] == b["best_epoch"] == 2
    assert [r["val_miou"] for r in a["history"]] == [r["val_miou"] for r in b["history"]]
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    for k, st in a["optimizer"]["state"].items():
        assert all(torch.equal(st[n], b["optimizer"]["state"][k][n]) for n in st)
    assert (cut_dir / "log.csv").read_text().count("\n") == 4  # header + 3 epochs, none twice


def test_resume_restores_every_rng(tmp_path, monkeypatch):
    """The in-process twin of the SIGKILL test, with the RNG restore disabled: resumed training then
    differs (so the bit-equality above depends on restoring the RNG states, not on luck)."""
    data, proto = ToyDataset(), get_protocol("hsnet", img_size=32)

    def run(out: Path, epochs: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        m = NoisyToyDecoder(ToyBackbone())
        train(m, data, 0, proto, _cfg(epochs), out, seed=1, val_episodes=4)
        return m.trainable_state()

    full = run(tmp_path / "full", 2)
    run(tmp_path / "ok", 1)
    assert _equal_states(full, run(tmp_path / "ok", 2))
    run(tmp_path / "broken", 1)
    monkeypatch.setattr(train_mod, "_set_rng_state", lambda state: None)
    assert not _equal_states(full, run(tmp_path / "broken", 2))


def test_checkpoints_name_the_method_and_options(tmp_path):
    torch.manual_seed(0)
    m = ToyDecoder(ToyBackbone())
    summary = train(m, ToyDataset(), 0, get_protocol("hsnet", img_size=32), _cfg(1), tmp_path, val_episodes=4)
    best, last = _load(tmp_path / "best.pt"), _load(tmp_path / "last.pt")
    assert best["format"] == DECODER_FORMAT and last["format"] == TRAIN_FORMAT
    assert best["method"] == last["method"] == "toy-decoder"
    assert best["options"] == {"layers": "auto", "hybrid_masking": False}
    assert best["selection"] == "best-val" and best["epoch"] == summary.best_epoch == 0 and summary.selected
    assert _equal_states(best["state"], m.trainable_state())


def _fake_evaluate(mious: list[float]):
    calls = iter(mious)

    def evaluate(*args: Any, **kwargs: Any) -> SimpleNamespace:
        return SimpleNamespace(metrics={"miou": next(calls), "fbiou": 50.0})

    return evaluate


def test_nan_validation_is_never_best(tmp_path, monkeypatch):
    """NaN epochs before and after the scored one: neither is selected (a NaN wins ``not m <= best``
    and ``max`` comparisons, and the first epoch must not be taken just because it is first)."""
    monkeypatch.setattr(train_mod, "evaluate", _fake_evaluate([math.nan, 10.0, math.nan]))
    torch.manual_seed(0)
    m = ToyDecoder(ToyBackbone())
    states: list[dict[str, torch.Tensor]] = []
    summary = train(m, ToyDataset(), 0, get_protocol("hsnet", img_size=32), _cfg(3), tmp_path, val_episodes=4,
                    on_epoch=lambda row: states.append({k: v.clone() for k, v in m.trainable_state().items()}))
    assert summary.best_epoch == 1 and summary.best_val_miou == 10.0 and summary.selected
    best = _load(tmp_path / "best.pt")
    assert best["epoch"] == 1 and _equal_states(best["state"], states[1])
    assert not _equal_states(best["state"], states[2])


def test_all_nan_validation_selects_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(train_mod, "evaluate", _fake_evaluate([math.nan, math.nan]))
    torch.manual_seed(0)
    m = ToyDecoder(ToyBackbone())
    summary = train(m, ToyDataset(), 0, get_protocol("hsnet", img_size=32), _cfg(2), tmp_path, val_episodes=4)
    assert summary.best_epoch == -1 and math.isnan(summary.best_val_miou) and not summary.selected
    best = _load(tmp_path / "best.pt")
    assert best["selection"] == "last-epoch" and best["epoch"] == 1 and math.isnan(best["val_miou"])
    assert _equal_states(best["state"], m.trainable_state())


def test_truncated_last_pt_is_a_user_error(tmp_path):
    data, proto = ToyDataset(), get_protocol("hsnet", img_size=32)
    train(ToyDecoder(ToyBackbone()), data, 0, proto, _cfg(1), tmp_path, val_episodes=4)
    raw = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="truncated.*delete it to restart training from scratch") as err:
        train(ToyDecoder(ToyBackbone()), data, 0, proto, _cfg(2), tmp_path, val_episodes=4)
    assert "\n" not in str(err.value) and "last.pt" in str(err.value) and "weights_only" not in str(err.value)


def test_last_pt_of_an_old_fssbench_is_a_user_error(tmp_path):
    data, proto = ToyDataset(), get_protocol("hsnet", img_size=32)
    m = ToyDecoder(ToyBackbone())
    old = {"method": m.trainable_state(), "optimizer": {}, "schedule": {}, "rng": {}, "epoch": 0,
           "best_epoch": 0, "best_miou": 1.0}
    tmp_path.mkdir(exist_ok=True)
    torch.save(old, tmp_path / "last.pt")
    with pytest.raises(UserError, match="older fssbench.*delete it to restart training from scratch"):
        train(m, data, 0, proto, _cfg(2), tmp_path, val_episodes=4)


def test_resume_refuses_other_training_settings(tmp_path):
    """Only ``epochs`` may change on resume (test_runner extends a training); another learning rate
    or batch size would silently splice two trainings together."""
    data, proto = ToyDataset(), get_protocol("hsnet", img_size=32)
    train(ToyDecoder(ToyBackbone()), data, 0, proto, _cfg(1), tmp_path, val_episodes=4)
    other = TrainConfig(**{**_cfg(2).__dict__, "lr": 0.5})
    with pytest.raises(UserError, match=r"other training settings: lr=0.02 \(now 0.5\); delete it"):
        train(ToyDecoder(ToyBackbone()), data, 0, proto, other, tmp_path, val_episodes=4)
    summary = train(ToyDecoder(ToyBackbone()), data, 0, proto, _cfg(2), tmp_path, val_episodes=4)
    assert summary.resumed_from == 1


def test_resume_checks_the_method(tmp_path):
    data, proto = ToyDataset(), get_protocol("hsnet", img_size=32)
    train(ToyDecoder(ToyBackbone()), data, 0, proto, _cfg(1), tmp_path, val_episodes=4)
    with pytest.raises(UserError, match="trained for method 'toy-decoder', not 'toy-noisy'"):
        train(NoisyToyDecoder(ToyBackbone()), data, 0, proto, _cfg(2), tmp_path, val_episodes=4)


@pytest.mark.parametrize(
    ("n", "world", "expected"),
    [(4, 2, [(2, 1.0), (2, 1.0)]), (3, 2, [(2, 4 / 3), (1, 2 / 3)]), (1, 2, [(1, 2.0), (1, 0.0)])],
)
def test_shards_weight_to_the_group_mean(n, world, expected):
    group = list(range(n))
    got = [shard_of(group, r, world) for r in range(world)]
    assert [(len(s), w) for s, w in got] == expected
    assert sum(w for _, w in got) == world  # DDP's average of the weights is 1: the group mean
