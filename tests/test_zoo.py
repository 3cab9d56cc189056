"""The embedded zoo: architectures through the Backbone interface, shipped checkpoints, the text
tower, deterministic (tiny) builds and the missing-checkpoint error."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from fssbench.backbones.zoo import SHIPPED_DIR, ZOO, layer_specs, load_zoo_backbone
from fssbench.backbones.zoo import store
from fssbench.errors import MissingFileError, UserError

NAMES = list(ZOO)
CNNS = [n for n in NAMES if ZOO[n].arch == "cnn"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FSSBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "zoo"


def _images(b: int, size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, 3, size, size, generator=g)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [64, 96])
def test_architecture_through_backbone_interface(name, size):
    bb = load_zoo_backbone(name, "random")
    spec = ZOO[name]
    assert bb.arch == spec.arch and bb.layers == layer_specs(spec)
    feats = bb(_images(2, size), "blocks")
    assert list(feats) == [s.name for s in bb.layers]
    for s in bb.layers:
        f = feats[s.name]
        assert f.shape == (2, s.channels, size // s.stride, size // s.stride), s
        assert torch.isfinite(f).all()
    stages = bb.stage_layers
    if spec.arch == "cnn":
        assert [s.stride for s in stages] == [4, 8, 16, 32]
        assert [s.stage for s in stages] == [1, 2, 3, 4]
        assert [s.name.split(".")[0] for s in stages] == ["layer1", "layer2", "layer3", "layer4"]
    else:
        assert len(bb.layers) >= 6 and len(stages) >= 3 and {s.stride for s in stages} == {8}
    # an explicit subset equals the same layers from the full run
    sub = bb(_images(2, size), [stages[1].name])
    torch.testing.assert_close(sub[stages[1].name], feats[stages[1].name])
    # frozen
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training and not any(m.training for m in bb.modules())


def test_scale_up_is_larger():
    rs, rm = ZOO["zoo-rn-s"].config, ZOO["zoo-rn-m"].config
    assert rm["width"] > rs["width"] and sum(rm["layers"]) > sum(rs["layers"])
    # the CLIP image trunk has exactly zoo-rn-s's shape
    assert layer_specs(ZOO["zoo-clip-rn"]) == layer_specs(ZOO["zoo-rn-s"])


def _shipped_manifest() -> dict:
    return json.loads((SHIPPED_DIR / "zoo.json").read_text())


def test_shipped_checkpoints_match_checksums():
    manifest = _shipped_manifest()
    sums = dict(line.split()[::-1] for line in (SHIPPED_DIR / "SHA256SUMS").read_text().splitlines())
    assert set(manifest["models"]) == set(NAMES)
    total = 0
    for name, entry in manifest["models"].items():
        path = SHIPPED_DIR / entry["file"]
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == sums[entry["file"]]
        assert len(data) == entry["bytes"]
        total += len(data)
        assert set(entry["check"]) >= {"heldout_top1", "fss_probe_miou"}
    assert total < 12e6


@pytest.mark.parametrize("name", NAMES)
def test_shipped_checkpoint_loads(name, empty_cache):
    assert store.locate(name) == ("shipped", SHIPPED_DIR / f"{name}.pt")
    bb = load_zoo_backbone(name)
    assert bb.pretraining == ZOO[name].pretraining
    assert all(p.dtype == torch.float32 for p in bb.parameters())
    entry = _shipped_manifest()["models"][name]
    assert sum(p.numel() for p in bb.net.parameters()) == entry["params"]
    if name in CNNS:  # block features are taken before the final ReLU
        feats = bb(_images(1, 64), "stages")
        assert all((f < 0).any() for f in feats.values())


def test_registry_creates_zoo_backbones():
    from fssbench.backbones import create_backbone, get_backbone_info

    for name in NAMES:
        info = get_backbone_info(name)
        assert info.kind == "zoo" and info.arch == ZOO[name].arch
        assert tuple(info.layer_specs()) == tuple(layer_specs(ZOO[name]))
    bb = create_backbone("zoo-clip-rn")
    assert bb.has_text and bb.pretraining == "zoo-clip"
    assert create_backbone("zoo-rn-s", weights="random").pretraining == "random"


def test_text_tower(empty_cache):
    bb = load_zoo_backbone("zoo-clip-rn")
    d = ZOO["zoo-clip-rn"].config["embed_dim"]
    t = bb.encode_text(["a photo of a red striped circle", "a photo of a blue dotted square", "unknown words!"])
    assert t.shape == (3, d)
    torch.testing.assert_close(t.norm(dim=1), torch.ones(3))
    for size in (64, 128):
        dense = bb.dense_image_embedding(_images(2, size))
        assert dense.shape == (2, d, size // 32, size // 32)
        torch.testing.assert_close(dense.norm(dim=1), torch.ones(2, size // 32, size // 32))
        assert bb.encode_image(_images(2, size)).shape == (2, d)
    sim = bb.dense_text_similarity(_images(1, 96), ["a photo of a red striped circle"])
    assert sim.shape == (1, 1, 3, 3)
    tok = bb.net.tokenizer(["a photo of a red striped circle"])[0]
    assert tok.argmax() == 8 and int(tok[8]) == bb.net.tokenizer.eot  # argmax pooling finds EOT
    with pytest.raises(NotImplementedError):
        load_zoo_backbone("zoo-rn-s", "random").encode_text(["x"])


def test_tiny_build_is_deterministic(tmp_path):
    from fssbench.backbones.zoo.train import build_one, get_pools

    pools = get_pools(n_train=64, n_heldout=16, workers=1)
    for name in NAMES:
        a, ea = build_one(name, pools, steps=2, batch=8, probe=False)
        b, eb = build_one(name, pools, steps=2, batch=8, probe=False)
        assert a == b and ea["sha256"] == eb["sha256"], name
        sd_a = torch.load(__import__("io").BytesIO(a), weights_only=True)
        assert all(v.dtype in (torch.float16, torch.int64) for v in sd_a.values())


def test_build_zoo_writes_manifest(tmp_path):
    from fssbench.backbones.zoo.train import build_zoo

    out = tmp_path / "zoo"
    m = build_zoo(out, only=["zoo-rn-s"], steps=1, n_train=32, n_heldout=8, probe=False)
    entry = m["models"]["zoo-rn-s"]
    assert (out / "zoo-rn-s.pt").is_file() and (out / "SHA256SUMS").read_text().startswith(entry["sha256"])
    bb = load_zoo_backbone("zoo-rn-s", weights_dir=out)
    assert bb.weights_path == out / "zoo-rn-s.pt"


def test_missing_checkpoint_error(empty_cache, tmp_path, monkeypatch):
    monkeypatch.setattr(store, "SHIPPED_DIR", tmp_path / "nothing")
    assert store.locate("zoo-vit") is None
    with pytest.raises(MissingFileError) as err:
        load_zoo_backbone("zoo-vit")
    msg = str(err.value)
    assert "\n" not in msg and "fssbench zoo build" in msg and "zoo-vit" in msg


def test_cache_preferred_and_checksum_enforced(empty_cache):
    empty_cache.mkdir(parents=True)
    shutil.copy(SHIPPED_DIR / "zoo-rn-s.pt", empty_cache / "zoo-rn-s.pt")
    shutil.copy(SHIPPED_DIR / "zoo.json", empty_cache / "zoo.json")
    assert store.locate("zoo-rn-s")[0] == "cache"
    load_zoo_backbone("zoo-rn-s")
    data = bytearray((empty_cache / "zoo-rn-s.pt").read_bytes())
    data[-100] ^= 0xFF
    (empty_cache / "zoo-rn-s.pt").write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum"):
        load_zoo_backbone("zoo-rn-s")


def test_cli_list_and_unknown_name(empty_cache):
    import typer
    from typer.testing import CliRunner

    from fssbench.commands.zoo import register

    app = typer.Typer()

    @app.callback()
    def _main() -> None:
        pass

    register(app)
    res = CliRunner().invoke(app, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    for name in NAMES:
        assert name in res.output
    assert "shipped" in res.output
    with pytest.raises(UserError, match="unknown zoo model"):
        load_zoo_backbone("zoo-nope")
