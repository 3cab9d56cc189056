"""Backbones: every real architecture with random weights through the interface, weight files, CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
from torch import nn
from typer.testing import CliRunner

from fssbench.backbones import (
    ENV_VAR,
    Backbone,
    LayerSpec,
    create_backbone,
    get_backbone_info,
    list_backbones,
    load_state_dict_file,
    register_backbone,
    unregister_backbone,
)
from fssbench.backbones.clip import ClipBackbone
from fssbench.backbones.resnet import TorchvisionResNet, VGGFeatures
from fssbench.errors import MissingFileError, UserError


BUILTINS = ["clip-rn50", "clip-rn101", "clip-vit-b16", "in1k-rn50", "in1k-rn101", "in1k-rn152", "vgg16"]
RESNETS = ["clip-rn50", "clip-rn101", "in1k-rn50", "in1k-rn101", "in1k-rn152"]
CLIPS = ["clip-rn50", "clip-rn101", "clip-vit-b16"]
SIZE = 64


def _perturb_bn(module: nn.Module, seed: int = 0) -> None:
    """Random init zeroes CLIP's bn3 gains (blocks start as identity); give every BN generic statistics."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(n, generator=g)
            m.bias.data = 0.2 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)


_CACHE: dict[str, Backbone] = {}


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_cleanup():
    """One intra-op thread (on a busy 2-core box OpenMP spin-waiting costs more than it gains);
    the cached networks (~2 GB) are released when the module is done."""
    from fssbench.workers import threads

    with threads(1):
        yield
    _CACHE.clear()
    _FEATS.clear()


def built(name: str) -> Backbone:
    """One random-weight instance per architecture for the whole module."""
    if name not in _CACHE:
        torch.manual_seed(0)
        bb = create_backbone(name, weights="random")
        _perturb_bn(bb)
        _CACHE[name] = bb
    return _CACHE[name]


_FEATS: dict[str, dict[str, torch.Tensor]] = {}


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def block_feats(name: str, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``built(name)(images, "blocks")``, computed once per architecture (CPU time is scarce)."""
    if name not in _FEATS:
        _FEATS[name] = built(name)(images, layers="blocks")
    return _FEATS[name]


@pytest.fixture()
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No weights anywhere: empty HOME, torch hub and HF caches, no $FSSBENCH_WEIGHTS."""
    import huggingface_hub.constants as hfc

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return tmp_path


# --- registry ---------------------------------------------------------------------------------------
def test_registry_lists_builtins_with_metadata() -> None:
    infos = {i.name: i for i in list_backbones()}
    assert set(BUILTINS) <= set(infos)
    for name in BUILTINS:
        info = infos[name]
        assert info.arch in ("cnn", "vit")
        assert info.pretraining in ("clip", "in1k")
        assert info.weights is not None and info.weights.filenames
        assert len(info.stage_layers) >= 3
        assert info.has_text == (name in CLIPS)
    assert infos["clip-vit-b16"].arch == "vit"
    assert [s.name for s in infos["clip-vit-b16"].stage_layers] == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]
    assert [s.name for s in infos["vgg16"].layer_specs()][-7:] == [
        "block4.0", "block4.1", "block4.2", "block5.0", "block5.1", "block5.2", "pool5.0",
    ]
    assert len(infos["in1k-rn101"].layer_specs()) == 33 and len(infos["in1k-rn152"].layer_specs()) == 50
    with pytest.raises(UserError, match="unknown backbone"):
        create_backbone("no-such-backbone", weights="random")


# --- every architecture through the interface --------------------------------------------------------
@pytest.mark.parametrize("name", BUILTINS)
def test_shapes_strides_stages_match_declaration(name: str, images: torch.Tensor) -> None:
    bb = built(name)
    info = get_backbone_info(name)
    assert bb.name == name and bb.pretraining == "random"
    assert tuple(bb.layers) == info.layer_specs()  # registry metadata == the real network
    feats = block_feats(name, images)
    assert list(feats) == [s.name for s in bb.layers]
    for spec in bb.layers:
        assert feats[spec.name].shape == (1, spec.channels, SIZE // spec.stride, SIZE // spec.stride), spec
        assert feats[spec.name].dtype == torch.float32
    # stages: the last block of each stage, strides non-decreasing
    stages = bb.stage_layers
    assert [s.stage for s in stages] == sorted({s.stage for s in bb.layers})
    for st in stages:
        assert st == [s for s in bb.layers if s.stage == st.stage][-1]
    assert all(a.stride <= b.stride for a, b in zip(stages, stages[1:]))
    stage_feats = bb(images, layers="stages")
    assert list(stage_feats) == [s.name for s in stages]
    for s in stages:
        torch.testing.assert_close(stage_feats[s.name], feats[s.name])
    # explicit names (early stop must not change values)
    first = bb.layers[0].name
    only = bb(images, layers=[first])
    assert list(only) == [first]
    torch.testing.assert_close(only[first], feats[first])
    with pytest.raises(KeyError):
        bb(images, layers=["nope.0"])


def test_resnet_and_clip_stage_layout() -> None:
    for name in RESNETS:
        stages = built(name).stage_layers
        assert [(s.stride, s.channels) for s in stages] == [(4, 256), (8, 512), (16, 1024), (32, 2048)]
        assert [s.name.split(".")[0] for s in stages] == ["layer1", "layer2", "layer3", "layer4"]
    vit = built("clip-vit-b16")
    assert [s.stage for s in vit.layers] == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert {(s.stride, s.channels) for s in vit.layers} == {(16, 768)}
    vgg = built("vgg16")
    assert [(s.stride, s.channels) for s in vgg.stage_layers] == [
        (1, 64), (2, 128), (4, 256), (8, 512), (16, 512), (32, 512),
    ]


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_blocks_are_pre_relu(name: str, images: torch.Tensor) -> None:
    bb = built(name)
    feats = block_feats(name, images)
    for spec in bb.layers:
        assert feats[spec.name].min() < 0, f"{spec.name} looks post-ReLU"
    # independent check: the input of each block's final ReLU, captured by hooks on the real modules
    if isinstance(bb, TorchvisionResNet):
        net = bb.net
        blocks = [(f"layer{s}.{i}", b) for s in range(1, 5) for i, b in enumerate(getattr(net, f"layer{s}"))]
        seen: dict[str, torch.Tensor] = {}
        hooks = []
        for bname, block in blocks:
            def pre(_m, inp, bname=bname):  # the final relu call of the block is the last one recorded
                seen[bname] = inp[0].clone()
            hooks.append(block.relu.register_forward_pre_hook(pre))
        with torch.no_grad():
            nn.Sequential(*list(net.children())[:-2])(bb.normalize(images))
        for h in hooks:
            h.remove()
        for bname, _ in blocks:
            torch.testing.assert_close(feats[bname], seen[bname])
    else:  # CLIP ModifiedResNet: post-ReLU stage outputs equal open_clip's forward_intermediates
        with torch.no_grad():
            inter = bb.model.visual.forward_intermediates(bb.normalize(images), intermediates_only=True)
        for spec, ref in zip(bb.stage_layers, inter["image_intermediates"][1:]):
            torch.testing.assert_close(F.relu(feats[spec.name]), ref, rtol=1e-4, atol=1e-4)


def test_vgg16_matches_hsnet_feature_ids(images: torch.Tensor) -> None:
    bb = built("vgg16")
    assert isinstance(bb, VGGFeatures)
    hsnet_ids = [17, 19, 21, 24, 26, 28, 30]
    ref = []
    x = bb.normalize(images)
    with torch.no_grad():  # HSNet's extract_feat_vgg: clone after modules 17..30 of vgg16.features
        for lid, module in enumerate(bb.features):
            x = module(x.clone())
            if lid in hsnet_ids:
                ref.append(x.clone())
    feats = block_feats("vgg16", images)
    ours = {k: feats[k] for k in ["block4.0", "block4.1", "block4.2", "block5.0", "block5.1", "block5.2", "pool5.0"]}
    for got, want in zip(ours.values(), ref):
        torch.testing.assert_close(got, want)
    assert all(v.min() < 0 for k, v in ours.items() if k != "pool5.0")  # conv outputs before ReLU


@pytest.mark.parametrize("name", BUILTINS)
def test_frozen_and_eval(name: str) -> None:
    bb = built(name)
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training and not any(m.training for m in bb.modules())
    bb.train(True)
    assert not any(m.training for m in bb.modules())


# --- CLIP text / dense -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CLIPS)
def test_clip_text_and_dense(name: str, images: torch.Tensor) -> None:
    bb = built(name)
    assert isinstance(bb, ClipBackbone) and bb.has_text
    dim = get_backbone_info(name).text_dim
    s = bb.dense_stride
    dense = bb.dense_image_embedding(images)
    assert dense.shape == (1, dim, SIZE // s, SIZE // s)
    torch.testing.assert_close(dense.norm(dim=1), torch.ones(1, SIZE // s, SIZE // s))
    emb = bb.encode_image(images)  # 64x64: positional embeddings are interpolated
    assert emb.shape == (1, dim)
    if name == "clip-rn101":
        return  # same text tower code as clip-rn50; spare the CPU
    sim = bb.dense_text_similarity(images, ["a dog"])
    assert sim.shape == (1, 1, SIZE // s, SIZE // s)
    assert sim.abs().max() <= 1 + 1e-5
    if name == "clip-rn50":
        prompts = ["a photo of a dog", "background"]
        text = bb.encode_text(prompts)
        assert text.shape == (2, dim)
        torch.testing.assert_close(text.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(sim[0, 0], torch.einsum("dhw,d->hw", dense[0], bb.encode_text(["a dog"])[0]))
        with torch.no_grad():  # the cut sequence equals open_clip's full 77-token encoding
            full = bb.model.encode_text(bb.tokenizer(prompts[:1]), normalize=True)
        torch.testing.assert_close(text[:1], full, rtol=1e-4, atol=1e-5)


def test_clip_resnet_dense_is_maskclip_value_path(images: torch.Tensor) -> None:
    bb = built("clip-rn50")
    ap = bb.model.visual.attnpool
    with torch.no_grad():
        fmap = bb.model.visual.forward_intermediates(bb.normalize(images), intermediates_only=True)[
            "image_intermediates"
        ][-1]
        v = F.conv2d(fmap, ap.v_proj.weight[:, :, None, None], ap.v_proj.bias)
        want = F.normalize(F.conv2d(v, ap.c_proj.weight[:, :, None, None], ap.c_proj.bias), dim=1)
    torch.testing.assert_close(bb.dense_image_embedding(images), want, rtol=1e-4, atol=1e-4)


def test_clip_rn50_global_embedding_matches_open_clip_at_224() -> None:
    bb = built("clip-rn50")
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = bb.model.encode_image(bb.normalize(x), normalize=True)
    torch.testing.assert_close(bb.encode_image(x), want, rtol=1e-4, atol=1e-4)


def test_clip_vit_matches_open_clip_at_224() -> None:
    """Blocks, global and dense outputs equal open_clip's at the native size (ViT cut to 3 blocks for speed)."""
    full = built("clip-vit-b16")
    visual = full.model.visual
    blocks = visual.transformer.resblocks
    visual.transformer.resblocks = blocks[:3]
    try:
        bb = ClipBackbone(full.model, name="vit-3-blocks")
        x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            ref = visual.forward_intermediates(bb.normalize(x))
            feats = bb(x)
            assert [s.name for s in bb.layers] == ["blocks.0", "blocks.1", "blocks.2"]
            for spec, want in zip(bb.layers, ref["image_intermediates"]):
                torch.testing.assert_close(feats[spec.name], want, rtol=1e-4, atol=1e-4)
            got = bb.encode_image(x)
            torch.testing.assert_close(got, F.normalize(ref["image_features"], dim=-1), rtol=1e-4, atol=1e-4)
            last = ref["image_intermediates"][-1]  # [1, C, 14, 14]
            tokens = visual.ln_post(last.flatten(2).transpose(1, 2)) @ visual.proj
            want = F.normalize(tokens.transpose(1, 2).reshape(1, -1, 14, 14), dim=1)
            torch.testing.assert_close(bb.dense_image_embedding(x), want, rtol=1e-4, atol=1e-4)
    finally:
        visual.transformer.resblocks = blocks


# --- weights -----------------------------------------------------------------------------------------
def test_missing_weights_is_one_clear_line(isolated: Path) -> None:
    with pytest.raises(MissingFileError) as err:
        create_backbone("clip-rn50")
    msg = str(err.value)
    assert "\n" not in msg and "RN50.pt" in msg and f"${ENV_VAR}" in msg and "--weights-dir" in msg
    assert err.value.exit_code != 0
    wdir = isolated / "weights"
    wdir.mkdir()
    with pytest.raises(MissingFileError) as err:
        create_backbone("in1k-rn50", weights_dir=wdir)
    msg = str(err.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg and str(wdir) in msg
    status = get_backbone_info("in1k-rn50").weights_status(wdir)
    assert not status.ok and str(wdir / "resnet50-0676ba61.pth") in status.searched
    with pytest.raises(MissingFileError):
        create_backbone("vgg16", weights=str(wdir / "nope.pth"))


def test_torchvision_weights_load_from_dir_env_and_hub_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    torch.manual_seed(3)
    ref = torchvision.models.resnet50(weights=None)
    _perturb_bn(ref, seed=3)
    wdir = isolated / "weights"
    wdir.mkdir()
    torch.save(ref.state_dict(), wdir / "resnet50-0676ba61.pth")
    bb = create_backbone("in1k-rn50", weights_dir=wdir)
    assert bb.pretraining == "in1k" and bb.weights_path == wdir / "resnet50-0676ba61.pth"
    own = bb.net.state_dict()
    for k, v in ref.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        want = nn.Sequential(*list(ref.children())[:-2]).eval()(bb.normalize(x))
    torch.testing.assert_close(F.relu(bb(x, layers=["layer4.2"])["layer4.2"]), want)
    # $FSSBENCH_WEIGHTS and torch hub's cache are found as well (status only: loading is the same path)
    monkeypatch.setenv(ENV_VAR, str(wdir))
    assert get_backbone_info("in1k-rn50").weights_status().found == wdir / "resnet50-0676ba61.pth"
    monkeypatch.delenv(ENV_VAR)
    hub = isolated / "home" / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet101-cd907fc2.pth").write_bytes(b"")
    assert get_backbone_info("in1k-rn101").weights_status().found == hub / "resnet101-cd907fc2.pth"


def test_vgg_safetensors_generic_name_and_mismatch(isolated: Path) -> None:
    from safetensors.torch import save_file

    src = built("vgg16")
    wdir = isolated / "w"
    wdir.mkdir()
    save_file({f"features.{k}": v.contiguous() for k, v in src.features.state_dict().items()}, str(wdir / "vgg16.safetensors"))
    bb = create_backbone("vgg16", weights_dir=wdir)
    for k, v in src.features.state_dict().items():
        assert torch.equal(bb.features.state_dict()[k], v)
    # a file of the wrong network is a one-line user error
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wdir / "bad.pth")
    with pytest.raises(UserError, match="does not fit vgg16") as err:
        create_backbone("vgg16", weights=wdir / "bad.pth")
    assert "\n" not in str(err.value)
    (wdir / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights file"):
        load_state_dict_file(wdir / "junk.pth")


def _torchscript_archive(state: dict[str, torch.Tensor], path: Path) -> None:
    """A TorchScript archive whose state dict is ``state`` (the form of OpenAI's CLIP .pt files)."""
    import warnings

    root = nn.Module()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        mod = root
        for p in parents:
            if not hasattr(mod, p):
                mod.add_module(p, nn.Module())
            mod = getattr(mod, p)
        mod.register_buffer(leaf, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(root), str(path))


def test_clip_openai_torchscript_archive_loads(isolated: Path) -> None:
    src = built("clip-rn50")
    state = {k: v.half() if v.is_floating_point() else v for k, v in src.model.state_dict().items()}
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    wdir = isolated / "w"
    wdir.mkdir()
    _torchscript_archive(state, wdir / "RN50.pt")
    status = get_backbone_info("clip-rn50").weights_status(wdir)
    assert status.found == wdir / "RN50.pt"
    bb = create_backbone("clip-rn50", weights_dir=wdir)
    assert bb.pretraining == "clip"
    own = bb.model.state_dict()
    for k, v in state.items():
        if k in own:
            assert own[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype)
            assert torch.equal(own[k], v.to(own[k].dtype)), k
    assert "input_resolution" not in own


def test_clip_found_in_hf_cache(isolated: Path) -> None:
    import huggingface_hub.constants as hfc

    snap = Path(hfc.HF_HUB_CACHE) / "models--timm--vit_base_patch16_clip_224.openai"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    (snap / "snapshots" / "abc123").mkdir(parents=True)
    (snap / "snapshots" / "abc123" / "open_clip_model.safetensors").write_bytes(b"")
    status = get_backbone_info("clip-vit-b16").weights_status()
    assert status.found == snap / "snapshots" / "abc123" / "open_clip_model.safetensors"


# --- extension (what the zoo does) -------------------------------------------------------------------
def test_register_custom_backbone_without_static_layers(images: torch.Tensor) -> None:
    import torchvision

    def factory(checkpoint: Path | None = None) -> Backbone:
        return TorchvisionResNet(torchvision.models.resnet18(weights=None), name="test-rn18", pretraining="zoo-sup")

    register_backbone("test-rn18", factory, kind="zoo", arch="cnn", model="ResNet-18", pretraining="zoo-sup")
    try:
        info = get_backbone_info("test-rn18")
        specs = info.layer_specs()  # derived on the meta device
        assert [s.name for s in specs][:2] == ["layer1.0", "layer1.1"]
        assert [(s.stride, s.channels) for s in info.stage_layers] == [(4, 64), (8, 128), (16, 256), (32, 512)]
        assert info.weights_status() is None
        bb = create_backbone("test-rn18")  # no weights file needed
        assert bb.pretraining == "zoo-sup"
        feats = bb(images)
        assert all(feats[s.name].shape == (1, s.channels, SIZE // s.stride, SIZE // s.stride) for s in specs)
        assert all(feats[s.name].min() < 0 for s in specs)
        with pytest.raises(ValueError):
            register_backbone("test-rn18", factory, kind="zoo", arch="cnn")
    finally:
        unregister_backbone("test-rn18")
    assert "test-rn18" not in {i.name for i in list_backbones()}
    assert LayerSpec("a", 1, 1, 1).stage == 1


# --- CLI ---------------------------------------------------------------------------------------------
def test_cli_lists_backbones_and_weight_locations(isolated: Path) -> None:
    from fssbench.commands import backbones as cmd

    app = typer.Typer()

    @app.callback()
    def _main() -> None:
        """test app"""

    cmd.register(app)
    wdir = isolated / "w"
    wdir.mkdir()
    (wdir / "RN101.pt").write_bytes(b"")
    result = CliRunner().invoke(app, ["backbones", "--weights-dir", str(wdir)], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    out = result.output
    for name in BUILTINS:
        assert name in out
    assert str(wdir / "RN101.pt") in out  # found
    assert str(wdir / "RN50.pt") in out and "missing" in out  # expected location
    assert "2048" in out and "ViT-B/16" in out and "ModifiedResNet-50" in out and "16/4" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.strip()}
    assert "found" in lines["clip-rn101"] and "missing" in lines["clip-rn50"]
    result = CliRunner().invoke(app, ["backbones", "--kind", "clip"], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "clip-rn50" in result.output and "in1k-rn50" not in result.output
