"""Decoder files: they name their method and options, and every way of being wrong is one line."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import torch

from fssbench.engine.checkpoint import DECODER_FORMAT, load_decoder, save_decoder
from fssbench.errors import UserError
from tests.toy import ToyBackbone, ToyDecoder


class TwinDecoder(ToyDecoder):
    """Same parameters as the toy decoder under another name: what HSNet-HM is to HSNet."""

    name: ClassVar[str] = "toy-twin"


class WideDecoder(ToyDecoder):
    """Another architecture under the same name (as if an option had changed the layers)."""

    def __init__(self, backbone, **options) -> None:
        super().__init__(backbone, **options)
        del self.head
        self.extra = torch.nn.Linear(3, 3)
        self.head2 = torch.nn.Conv2d(2, 2, 1)


class Opaque:
    """A custom class: unpickling an instance needs code, which ``weights_only`` refuses."""

    def __init__(self) -> None:
        self.x = 1


def _decoder(seed: int = 0, cls: type[ToyDecoder] = ToyDecoder, **options) -> ToyDecoder:
    torch.manual_seed(seed)
    return cls(ToyBackbone(), **options)


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "dec" / "best.pt"
    save_decoder(_decoder(seed=1), path, epoch=3)
    return path


def _error(path: Path, method: ToyDecoder) -> str:
    with pytest.raises(UserError) as err:
        load_decoder(path, method)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    assert "weights_only" not in msg, "never suggest unsafe loading"
    return msg


def test_round_trip_loads_the_state(saved):
    ckpt = torch.load(saved, weights_only=True)
    assert ckpt["format"] == DECODER_FORMAT and ckpt["method"] == "toy-decoder" and ckpt["epoch"] == 3
    fresh = _decoder(seed=2)
    assert not torch.equal(fresh.head.weight, _decoder(seed=1).head.weight)
    assert load_decoder(saved, fresh) is None
    assert torch.equal(fresh.head.weight, _decoder(seed=1).head.weight)
    assert not list(saved.parent.glob(".*tmp*")), "no temporary file left behind"


def test_missing_file(tmp_path):
    msg = _error(tmp_path / "nope" / "best.pt", _decoder())
    assert "does not exist" in msg and "retrain" in msg


def test_truncated_file(saved):
    raw = saved.read_bytes()
    saved.write_bytes(raw[: len(raw) * 2 // 3])
    msg = _error(saved, _decoder())
    assert "truncated or corrupt" in msg and f"delete {saved.parent}" in msg


@pytest.mark.parametrize("content", [b"", b"hello, I am text\n", b"\x80\x02}q\x00."])
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    msg = _error(path, _decoder())
    assert any(w in msg for w in ("truncated or corrupt", "not a PyTorch file", "not an fssbench checkpoint")), msg


def test_file_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format": DECODER_FORMAT, "method": "toy-decoder", "options": {}, "state": {}, "x": Opaque()}, path)
    msg = _error(path, _decoder())
    assert "pickled Python objects" in msg and "can run code" in msg and "Opaque" in msg


def test_bare_state_dict_is_refused_even_when_it_fits(tmp_path):
    """An old fssbench ``best.pt`` (a bare state dict) cannot say which method it was trained for,
    so it would load an HM decoder as HSNet without complaint: it is refused, with the fix."""
    path = tmp_path / "best.pt"
    torch.save(_decoder().trainable_state(), path)
    msg = _error(path, _decoder())
    assert "bare state dict" in msg and "cannot be checked" in msg and "retrain" in msg


def test_other_format_is_refused(tmp_path):
    path = tmp_path / "best.pt"
    torch.save({"format": "fssbench.decoder/99", "method": "toy-decoder", "options": {}, "state": {}}, path)
    assert "has format 'fssbench.decoder/99', expected 'fssbench.decoder/1'" in _error(path, _decoder())
    torch.save([1, 2, 3], path)
    assert "not an fssbench checkpoint" in _error(path, _decoder())


def test_decoder_of_another_method_with_the_same_architecture(tmp_path):
    path = tmp_path / "best.pt"
    save_decoder(_decoder(cls=TwinDecoder), path)
    msg = _error(path, _decoder())
    assert "was trained for method 'toy-twin', not 'toy-decoder'" in msg
    assert "evaluate it with method 'toy-twin'" in msg


def test_decoder_trained_with_other_options(tmp_path):
    path = tmp_path / "best.pt"
    save_decoder(_decoder(hybrid_masking=True), path)
    msg = _error(path, _decoder())
    assert "hybrid_masking=True (method has False)" in msg


def test_keys_and_shapes_must_fit(saved):
    msg = _error(saved, _decoder(cls=WideDecoder))
    assert "does not fit method 'toy-decoder'" in msg
    assert "missing key(s) extra.weight, extra.bias, head2.weight" in msg and "(+1)" in msg
    assert "unexpected key(s) head.weight, head.bias" in msg
    # a shape mismatch alone is named with both shapes
    narrow = _decoder()
    narrow.head = torch.nn.Conv2d(2, 2, 1)
    msg = _error(saved, narrow)
    assert "1 shape mismatch(es) head.weight (2, 2, 3, 3) in the file vs (2, 2, 1, 1)" in msg
    assert "missing" not in msg and "unexpected" not in msg


def test_hm_decoder_is_not_evaluated_as_hsnet(tmp_path):
    """The bug this format fixes: HSNet-HM has exactly HSNet's parameters, so its state dict loads
    into HSNet silently; the decoder file's method name stops it."""
    from fssbench.methods import create_method

    backbone = ToyBackbone()
    hm, hsnet = create_method("hm", backbone), create_method("hsnet", backbone)
    assert hm.trainable_state().keys() == hsnet.trainable_state().keys()
    path = tmp_path / "best.pt"
    save_decoder(hm, path)
    assert "was trained for method 'hm', not 'hsnet'" in _error(path, hsnet)
    load_decoder(path, create_method("hm", backbone))  # the right method loads it


def test_fix_can_be_given_for_a_users_own_file(tmp_path):
    path = tmp_path / "mine.pt"
    torch.save(_decoder().trainable_state(), path)
    with pytest.raises(UserError, match=r"^released decoder file .* cannot be checked; pass a decoder file written by fssbench$"):
        load_decoder(path, _decoder(), what="released decoder", fix="pass a decoder file written by fssbench")
