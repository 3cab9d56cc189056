"""HSNet (methods.hsnet): layer choice, correlations, 4D conv, k-shot vote, training, checkpoints.

Everything runs on tiny toy backbones at 64-96 px. Bit-level parity with the authors' code
(juhongm999/hsnet) was checked outside the test suite against their implementation; here the
authors' parameter names and shapes are written down as data and loaded through the checkpoint path.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fssbench.backbones.base import Backbone, LayerSpec
from fssbench.episode import EpisodeBatch
from fssbench.errors import MissingFileError, UserError
from fssbench.methods import create_method, get_method_class, method_names
from methods.hsnet.checkpoint import load_checkpoint
from methods.hsnet.conv4d import CenterPivotConv4d
from methods.hsnet.correlation import cosine_correlation
from methods.hsnet.model import HSNet, kshot_vote, select_layer_groups

RN50 = (3, 4, 6, 3)
RN101 = (3, 4, 23, 3)


# --------------------------------------------------------------------------------------------------
# Toy backbones
# --------------------------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pre-ReLU output, like HSNet's features
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return y + (x if self.down is None else self.down(x))


class ToyResNet(Backbone):
    """ResNet-shaped toy: stride-4 stem, stages of residual blocks, features before the final ReLU."""

    arch = "cnn"
    pretraining = "random"

    def __init__(self, depths=RN50, widths=(4, 8, 8, 16), name: str = "toy-resnet", seed: int = 0) -> None:
        super().__init__()
        self.name = name
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.stem = nn.Conv2d(3, widths[0], 3, stride=4, padding=1)
            self.stages = nn.ModuleList()
            cin, stride = widths[0], 4
            for s, (d, w) in enumerate(zip(depths, widths), start=1):
                blocks = nn.ModuleList()
                for i in range(d):
                    st = 2 if (i == 0 and s > 1) else 1
                    stride *= st
                    blocks.append(_Block(cin, w, st))
                    self._layers.append(LayerSpec(f"layer{s}.{i}", w, stride, s))
                    cin = w
                self.stages.append(blocks)
        self.freeze()

    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        want, out = set(names), {}
        x = F.relu(self.stem(x))
        for s, blocks in enumerate(self.stages, start=1):
            for i, blk in enumerate(blocks):
                y = blk(x)
                if f"layer{s}.{i}" in want:
                    out[f"layer{s}.{i}"] = y
                if len(out) == len(want):
                    return out
                x = F.relu(y)
        return out


class ToyVGG(Backbone):
    """VGG-16-shaped toy: 5 stages of 2, 2, 3, 3, 3 convs (pre-ReLU features), pool5 not exposed."""

    arch = "cnn"
    pretraining = "random"

    def __init__(self, name: str = "vgg16-toy") -> None:
        super().__init__()
        self.name = name
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.convs = nn.ModuleList()
            cin, stride = 3, 1
            for s, n in enumerate((2, 2, 3, 3, 3), start=1):
                for i in range(n):
                    self.convs.append(nn.Conv2d(cin, 8, 3, padding=1))
                    self._layers.append(LayerSpec(f"stage{s}.{i}", 8, stride, s))
                    cin = 8
                stride *= 2
        self.freeze()

    def _extract(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        out = {}
        for j, (spec, conv) in enumerate(zip(self._layers, self.convs)):
            x = conv(x)
            if spec.name in names:
                out[spec.name] = x
            x = F.relu(x)
            if j + 1 < len(self._layers) and self._layers[j + 1].stage != spec.stage:
                x = F.max_pool2d(x, 2, 2)
        return out


def make_batch(bsz: int = 2, shot: int = 1, h: int = 64, w: int = 64, seed: int = 0, kind: str = "mask") -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(bsz, 3, h, w, generator=g)
    s = torch.rand(bsz, shot, 3, h, w, generator=g)
    fg = torch.zeros(bsz, shot, h, w)
    qm = torch.zeros(bsz, h, w)
    for b in range(bsz):
        for k in range(shot):
            y0, x0 = (int(v) for v in torch.randint(0, h // 2, (2,), generator=g))
            fg[b, k, y0 : y0 + h // 3, x0 : x0 + w // 3] = 1
        # query object with the support's colour statistics (a learnable toy task)
        qm[b, h // 4 : h // 2 + h // 8, w // 4 : w // 2 + w // 8] = 1
        q[b] = q[b] * 0.2 + qm[b] * 0.8
        s[b] = s[b] * 0.2 + fg[b].unsqueeze(1) * 0.8
    return EpisodeBatch(
        episodes=[],
        query_image=q,
        query_mask=qm,
        query_ignore=torch.zeros(bsz, h, w, dtype=torch.bool),
        support_images=s,
        support_fg=fg,
        support_bg=1 - fg,
        support_ignore=torch.zeros(bsz, shot, h, w, dtype=torch.bool),
        class_ids=torch.zeros(bsz, dtype=torch.long),
        prompts=["a photo of a thing"] * bsz,
        kind=kind,
    )


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy50() -> ToyResNet:
    return ToyResNet(RN50)


def build(backbone: Backbone, seed: int = 0, **options) -> HSNet:
    torch.manual_seed(seed)
    return HSNet(backbone, **options).eval()


# --------------------------------------------------------------------------------------------------
# Registry and options
# --------------------------------------------------------------------------------------------------
def test_registered_with_capabilities(toy50):
    assert {"hsnet", "hm"} <= set(method_names())
    cls = get_method_class("hsnet")
    assert cls is HSNet
    caps = cls.capabilities
    assert caps.kinds == frozenset({"mask", "bbox", "scribble"})
    assert caps.trains and caps.batchable and caps.stitchable  # by the relative-depth rule, CNNs only
    assert cls.default_config == {"layers": "auto", "hybrid_masking": False, "fg_weight": 1.0}
    assert cls.default_train.optimizer == "adam" and cls.default_train.lr == 1e-3
    m = create_method("hsnet", toy50)
    with pytest.raises(UserError, match="no option"):
        create_method("hsnet", toy50, bogus=1)
    with pytest.raises(UserError, match="hybrid_masking"):
        create_method("hsnet", toy50, hybrid_masking="yes")
    assert all(k.startswith("hpn_learner.") for k in m.trainable_state())


# --------------------------------------------------------------------------------------------------
# Layer choice
# --------------------------------------------------------------------------------------------------
def test_layer_groups_resnet50_and_101():
    g50 = select_layer_groups(ToyResNet(RN50))
    assert g50 == [[f"layer2.{i}" for i in range(4)], [f"layer3.{i}" for i in range(6)], [f"layer4.{i}" for i in range(3)]]
    assert HSNet(ToyResNet(RN50)).hpn_learner.inch == (3, 6, 4)  # authors: reversed(nbottlenecks[-3:])
    g101 = select_layer_groups(ToyResNet(RN101))
    assert [len(g) for g in g101] == [4, 23, 3]
    assert HSNet(ToyResNet(RN101)).hpn_learner.inch == (3, 23, 4)


def test_layer_groups_vgg16_derives_pool5():
    bb = ToyVGG()
    groups = select_layer_groups(bb)
    assert groups == [["stage4.0", "stage4.1", "stage4.2"], ["stage5.0", "stage5.1", "stage5.2"], ["maxpool:stage5.2"]]
    m = HSNet(bb)
    assert m.hpn_learner.inch == (1, 3, 3)
    x = torch.rand(1, 3, 64, 64)
    feats = m.extract_features(x)
    torch.testing.assert_close(feats["maxpool:stage5.2"], F.max_pool2d(F.relu(bb(x, ["stage5.2"])["stage5.2"]), 2, 2))
    assert m(x, x, torch.ones(1, 64, 64)).shape == (1, 2, 64, 64)


def test_layer_groups_vgg16_with_pool5_stage_uses_last_three_stages():
    # A VGG backbone that exposes pool5 as a 6th stage (fssbench's vgg16) needs no derivation.
    class VGGWithPool(ToyVGG):
        def __init__(self):
            super().__init__(name="vgg16")
            self._layers.append(LayerSpec("pool5.0", 8, 32, 6))

    assert select_layer_groups(VGGWithPool())[-1] == ["pool5.0"]
    assert [len(g) for g in select_layer_groups(VGGWithPool())] == [3, 3, 1]


def test_layer_groups_explicit_and_errors(toy50):
    flat = ["layer2.3", "layer3.5", "layer4.2", "layer4.1"]
    assert select_layer_groups(toy50, flat) == [["layer2.3"], ["layer3.5"], ["layer4.1", "layer4.2"]]
    nested = [["layer1.2"], ["layer2.3", "layer3.5"], ["layer4.2"]]
    assert select_layer_groups(toy50, nested) == nested
    assert HSNet(toy50, layers=nested).hpn_learner.inch == (1, 2, 1)
    with pytest.raises(UserError, match="not a layer"):
        select_layer_groups(toy50, ["layer9.0", "layer3.0", "layer4.0"])
    with pytest.raises(UserError, match="exactly 3"):
        select_layer_groups(toy50, ["layer3.0", "layer4.0"])
    with pytest.raises(UserError):
        select_layer_groups(toy50, "stages")
    two_stage = ToyResNet((1, 1), (4, 8))
    with pytest.raises(UserError, match="at least 3 stages"):
        HSNet(two_stage)


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
def test_cosine_correlation_is_clamped_cosine():
    g = torch.Generator().manual_seed(0)
    q, s = torch.randn(2, 5, 4, 3, generator=g), torch.randn(2, 5, 3, 2, generator=g)
    c = cosine_correlation(q, s)
    assert c.shape == (2, 4, 3, 3, 2)
    ref = torch.einsum("bchw,bcij->bhwij", F.normalize(q, dim=1), F.normalize(s, dim=1)).clamp(min=0)
    torch.testing.assert_close(c, ref, atol=1e-4, rtol=1e-4)
    assert (c >= 0).all() and (ref == 0).any()


def test_model_correlations_nonnegative_and_shaped(toy50):
    m = build(toy50)
    b = make_batch(bsz=2, h=64, w=64)
    pyr = m.correlations(b.query_image, b.support_images[:, 0], b.support_fg[:, 0])
    # deepest first: layer4 (3 layers, 2x2), layer3 (6, 4x4), layer2 (4, 8x8)
    assert [tuple(p.shape) for p in pyr] == [(2, 3, 2, 2, 2, 2), (2, 6, 4, 4, 4, 4), (2, 4, 8, 8, 8, 8)]
    assert all((p >= 0).all() for p in pyr)
    assert any((p == 0).any() for p in pyr)  # masked support positions / negative cosines are clamped


def test_center_pivot_conv4d_matches_its_definition():
    torch.manual_seed(0)
    conv = CenterPivotConv4d(3, 4, (3, 3, 3, 3), (1, 1, 2, 2), (1, 1, 1, 1))
    x = torch.randn(2, 3, 5, 6, 7, 5)
    y = conv(x)
    assert y.shape == (2, 4, 5, 6, 4, 3)
    # reference: the query-dim 2D conv at every 2nd support position + the strided support-dim 2D conv
    ref = torch.zeros_like(y)
    for i in range(5):
        for j in range(6):
            ref[:, :, i, j] += conv.conv2(x[:, :, i, j])
    for i, hb in enumerate(range(0, 7, 2)):
        for j, wb in enumerate(range(0, 5, 2)):
            ref[:, :, :, :, i, j] += conv.conv1(x[:, :, :, :, hb, wb])
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Forward, shapes, k-shot
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h,w", [(64, 64), (64, 96)])
def test_output_shapes(toy50, h, w):
    m = build(toy50)
    b1 = make_batch(bsz=2, shot=1, h=h, w=w)
    with torch.no_grad():
        logits = m.predict(b1)
        assert logits.shape == (2, 2, h, w) and torch.isfinite(logits).all()
        pm = m.predict_mask(b1)
        assert pm.shape == (2, h, w)
        assert torch.equal(pm, logits.argmax(1))
        b3 = make_batch(bsz=2, shot=3, h=h, w=w)
        assert m.predict(b3).shape == (2, 2, h, w)
        assert m.predict_mask(b3).shape == (2, h, w)
        assert set(m.predict_mask(b3).unique().tolist()) <= {0, 1}


def test_kshot_logits_equal_per_support_forward(toy50):
    m = build(toy50)
    b = make_batch(bsz=2, shot=3)
    with torch.no_grad():
        shots = m.shot_logits(b.query_image, b.support_images, b.support_fg)
        for k in range(3):
            assert torch.equal(shots[:, k], m(b.query_image, b.support_images[:, k], b.support_fg[:, k]))


def test_kshot_vote_rule_on_hand_made_masks():
    # one image, 3 supports; pixel votes 0, 1, 2, 3 -> max 3 -> keep votes/3 >= 0.5, i.e. votes >= 2
    m = torch.tensor([[[[0, 1, 1, 1]], [[0, 0, 1, 1]], [[0, 0, 0, 1]]]])  # [1, 3, 1, 4]
    assert kshot_vote(m).tolist() == [[[0, 0, 1, 1]]]
    # supports disagree completely: max vote 1, so every voted pixel survives (divide by max, not K)
    m = torch.tensor([[[[1, 0, 0, 0]], [[0, 1, 0, 0]], [[0, 0, 0, 0]]]])
    assert kshot_vote(m).tolist() == [[[1, 1, 0, 0]]]
    # no votes at all: the max(., 1) guard gives an empty mask, not NaN
    assert kshot_vote(torch.zeros(1, 4, 2, 2, dtype=torch.long)).tolist() == [[[0, 0], [0, 0]]]
    # K = 2, max 2: one vote is exactly 0.5 and counts (>= 0.5)
    m = torch.tensor([[[[1, 1, 0]], [[0, 1, 0]]]])
    assert kshot_vote(m).tolist() == [[[1, 1, 0]]]
    # the max is per image in the batch: [5 supports, votes 1..5] vs [votes at most 2]
    a = (torch.arange(5).view(1, 5, 1, 1) <= torch.arange(5).view(1, 1, 1, 5)).long()  # support k votes j >= k
    votes_a = a.sum(1)  # 1..5
    b = torch.zeros_like(a)
    b[0, :2, 0, :2] = 1  # votes 2, 2, 0, 0, 0
    out = kshot_vote(torch.cat([a, b]))
    assert votes_a.tolist() == [[[1, 2, 3, 4, 5]]]
    assert out.tolist() == [[[0, 0, 1, 1, 1]], [[1, 1, 0, 0, 0]]]
    # K = 1: the prediction itself
    one = torch.tensor([[[[0, 1, 1]]]])
    assert kshot_vote(one).tolist() == [[[0, 1, 1]]]


def test_predict_mask_votes_and_predict_encodes_the_vote(toy50, monkeypatch):
    m = build(toy50)
    fg = torch.tensor([[[1.0, 1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 1.0]]])  # [K, 1, 4]
    fake = torch.stack([-fg, fg], dim=1).unsqueeze(0)  # [1, K, 2, 1, 4]; argmax = fg
    monkeypatch.setattr(m, "shot_logits", lambda *a: fake)
    b = make_batch(bsz=1, shot=3, h=4, w=4)
    assert m.predict_mask(b).tolist() == [[[1, 1, 0, 1]]]  # votes 1, 2, 0, 1; max 2 -> >= 1 vote
    assert m.predict(b).argmax(1).tolist() == [[[1, 1, 0, 1]]]  # the harness scores predict's argmax


def test_needs_support_masks(toy50):
    b = make_batch(bsz=1)
    b.support_fg = None
    b.kind = "image"
    with pytest.raises(UserError, match="support masks"):
        build(toy50).predict(b)


def test_determinism_with_fixed_seed(toy50):
    b = make_batch(bsz=1, shot=2)
    with torch.no_grad():
        a = build(toy50, seed=7).predict(b)
        m = build(toy50, seed=7)
        assert torch.equal(a, m.predict(b)) and torch.equal(a, m.predict(b))
        assert not torch.equal(a, build(toy50, seed=8).predict(b))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------
def test_training_step_reduces_loss(toy50):
    m = build(toy50, seed=0).train()
    b = make_batch(bsz=2, shot=1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss, logs = m.loss(b)
        assert logs["loss"] == pytest.approx(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    assert all(p.grad is None for p in toy50.parameters())  # the backbone is frozen


def test_loss_is_cross_entropy_with_ignore_as_background(toy50):
    m = build(toy50)
    b = make_batch(bsz=2, shot=1)
    ign = torch.zeros_like(b.query_ignore)
    ign[:, 20:24] = True
    b.query_ignore = ign
    b2 = make_batch(bsz=2, shot=1)
    b2.query_mask = b.query_mask.clone()
    b2.query_mask[ign] = 1.0  # labels under ignore do not matter: they count as background
    b2.query_ignore = ign
    with torch.no_grad():
        l1, _ = m.loss(b)
        l2, _ = m.loss(b2)
        logits = m.predict(b)
        target = (b.query_mask.bool() & ~ign).long()
        ref = F.cross_entropy(logits.view(2, 2, -1), target.view(2, -1))
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(l1, ref)


def test_fg_weight_weights_the_foreground_class_only_in_the_loss(toy50):
    b = make_batch(bsz=2, shot=1)
    plain, weighted = build(toy50, seed=3), build(toy50, seed=3, fg_weight=4.0)
    with torch.no_grad():
        logits = plain.predict(b)
        assert torch.equal(logits, weighted.predict(b))  # inference is unaffected
        target = b.query_mask.bool().long()
        ce = F.cross_entropy(logits.view(2, 2, -1), target.view(2, -1), reduction="none")
        w = 1.0 + 3.0 * target.view(2, -1).float()
        ref = (ce * w).sum() / w.sum()
        torch.testing.assert_close(weighted.loss(b)[0], ref)
        assert not torch.allclose(weighted.loss(b)[0], plain.loss(b)[0])


@pytest.mark.parametrize("bad", [0, -1.0, "heavy", True])
def test_fg_weight_must_be_a_positive_number(toy50, bad):
    with pytest.raises(UserError, match="fg_weight must be a number > 0"):
        HSNet(toy50, fg_weight=bad)


# --------------------------------------------------------------------------------------------------
# Authors' checkpoints
# --------------------------------------------------------------------------------------------------
# The authors' HPNLearner, as data: block -> (kernel sizes, output channels); the first conv's input
# is the level's layer count (squeezing blocks) or 128 (mixing blocks). Each 4D conv holds conv1 and
# conv2 (2D, weight + bias), followed by GroupNorm (weight + bias) and ReLU: Sequential indices 0, 3, 6
# are convs, 1, 4, 7 GroupNorms.
AUTHORS_BLOCKS = {
    "encoder_layer4": ((3, 3, 3), (16, 64, 128)),
    "encoder_layer3": ((5, 3, 3), (16, 64, 128)),
    "encoder_layer2": ((5, 5, 3), (16, 64, 128)),
    "encoder_layer4to3": ((3, 3, 3), (128, 128, 128)),
    "encoder_layer3to2": ((3, 3, 3), (128, 128, 128)),
}
AUTHORS_DECODER = {
    "decoder1.0": (128, 128),
    "decoder1.2": (64, 128),
    "decoder2.0": (64, 64),
    "decoder2.2": (2, 64),
}
BACKBONE_KEYS = {"conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "layer1.0.conv1.weight": (64, 64, 1, 1), "fc.weight": (1000, 2048)}


def authors_learner_shapes(inch: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
    level_in = {"encoder_layer4": inch[0], "encoder_layer3": inch[1], "encoder_layer2": inch[2]}
    shapes: dict[str, tuple[int, ...]] = {}
    for block, (kernels, outs) in AUTHORS_BLOCKS.items():
        cin = level_in.get(block, 128)
        for j, (k, cout) in enumerate(zip(kernels, outs)):
            for conv in ("conv1", "conv2"):
                shapes[f"{block}.{3 * j}.{conv}.weight"] = (cout, cin, k, k)
                shapes[f"{block}.{3 * j}.{conv}.bias"] = (cout,)
            shapes[f"{block}.{3 * j + 1}.weight"] = (cout,)
            shapes[f"{block}.{3 * j + 1}.bias"] = (cout,)
            cin = cout
    for name, (cout, cin) in AUTHORS_DECODER.items():
        shapes[f"{name}.weight"] = (cout, cin, 3, 3)
        shapes[f"{name}.bias"] = (cout,)
    return shapes


def authors_state(inch=(3, 6, 4), prefix: str = "", seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {f"{prefix}hpn_learner.{k}": torch.randn(s, generator=g) for k, s in authors_learner_shapes(inch).items()}
    sd.update({f"{prefix}backbone.{k}": torch.randn(s, generator=g) for k, s in BACKBONE_KEYS.items()})
    return sd


def test_learner_has_exactly_the_authors_parameters(toy50):
    ours = {k: tuple(v.shape) for k, v in HSNet(toy50).hpn_learner.state_dict().items()}
    assert ours == authors_learner_shapes((3, 6, 4))
    assert len(ours) == 98


@pytest.mark.parametrize("prefix", ["", "module."])
def test_load_authors_checkpoint(toy50, tmp_path, prefix):
    sd = authors_state(prefix=prefix)
    path = tmp_path / "best_model.pt"
    torch.save(sd, path)
    m = build(toy50)
    ck = m.load_authors_checkpoint(str(path))
    loaded = m.hpn_learner.state_dict()
    for k, v in sd.items():
        rest = k[len(prefix) :]
        if rest.startswith("hpn_learner."):
            assert torch.equal(loaded[rest[len("hpn_learner.") :]], v), k
        else:
            assert torch.equal(ck.backbone[rest[len("backbone.") :]], v), k
    assert set(ck.backbone) == set(BACKBONE_KEYS)
    assert ck.trained_backbone == "resnet50"
    # the harness path (load_trainable_state) accepts the authors' dict too
    m2 = build(toy50, seed=3)
    m2.load_trainable_state(sd)
    assert all(torch.equal(a, b) for a, b in zip(m2.state_dict().values(), m.state_dict().values()))


def test_checkpoint_errors(toy50, tmp_path):
    m = build(toy50)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(MissingFileError):
        load_checkpoint(m, tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_checkpoint(m, bad)

    sd = authors_state(prefix="module.")
    del sd["module.hpn_learner.decoder2.2.bias"]
    sd["module.hpn_learner.extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "keys.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(m, tmp_path / "keys.pt")
    msg = str(err.value)
    assert "1 missing (decoder2.2.bias)" in msg and "1 unexpected (extra.weight)" in msg and "\n" not in msg

    torch.save(authors_state(inch=(3, 23, 4)), tmp_path / "rn101.pt")
    with pytest.raises(UserError, match=r"\(3, 23, 4\).*resnet101.*\(3, 6, 4\)"):
        load_checkpoint(m, tmp_path / "rn101.pt")

    torch.save({**authors_state(), "optimizer.step": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="unexpected key"):
        load_checkpoint(m, tmp_path / "other.pt")
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # failed loads change nothing


def test_predict_scores_encode_the_kshot_vote():
    """The harness scores ``predict``; its argmax must equal the authors' vote for K > 1."""
    import types

    import torch

    from methods.hsnet.model import HSNet, kshot_vote

    shot_logits = torch.randn(2, 3, 2, 9, 9)
    fake = types.SimpleNamespace(_batch_logits=lambda batch: shot_logits)
    scores = HSNet.predict(fake, None)
    assert torch.equal(scores.argmax(1), kshot_vote(shot_logits.argmax(dim=2)))
    one = shot_logits[:, :1]
    fake1 = types.SimpleNamespace(_batch_logits=lambda batch: one)
    assert torch.equal(HSNet.predict(fake1, None), one[:, 0])


# --------------------------------------------------------------------------------------------------
# Stitching
# --------------------------------------------------------------------------------------------------
def test_stitching_maps_blocks_by_relative_depth(toy50):
    """A learner trained on RN50-shaped blocks (4+6+3 in layer2..4) runs on RN101 shapes (4+23+3) and
    back: same learner parameters, each level's blocks taken at the same relative depth."""
    toy101 = ToyResNet(RN101, name="toy-resnet101", seed=1)
    m = create_method("hsnet", toy50)
    state = {k: v.clone() for k, v in m.trainable_state().items()}
    m.set_backbone(toy101)
    assert [len(g) for g in m.layer_groups] == [4, 6, 3]
    assert m.layer_groups[1] == [f"layer3.{i}" for i in (1, 5, 9, 13, 17, 21)]  # floor((2i+1)*23/12)
    assert m.layer_groups[0] == [f"layer2.{i}" for i in range(4)] and m.layer_groups[2] == [f"layer4.{i}" for i in range(3)]
    out = m.predict(make_batch())
    assert out.shape == (2, 2, 64, 64) and torch.isfinite(out).all()
    assert all(torch.equal(state[k], v) for k, v in m.trainable_state().items())
    deep = create_method("hsnet", toy101)  # and the other way: 23 trained blocks onto 6 (repeats)
    deep.set_backbone(toy50)
    assert len(deep.layer_groups[1]) == 23 and set(deep.layer_groups[1]) == {f"layer3.{i}" for i in range(6)}
    assert deep.predict(make_batch()).shape == (2, 2, 64, 64)


def test_stitching_to_a_vit_or_with_explicit_layers_is_incompatible(toy50):
    from fssbench.backbones import get_backbone_info

    cls = get_method_class("hsnet")
    vit, rn = get_backbone_info("zoo-vit"), get_backbone_info("zoo-rn-s")
    assert "strides" in cls.stitch_incompatible(cls.default_config, rn, vit)
    assert cls.stitch_incompatible(cls.default_config, rn, get_backbone_info("zoo-clip-rn")) is None
    assert cls.stitch_incompatible(cls.default_config, get_backbone_info("in1k-rn50"), get_backbone_info("clip-rn101")) is None
    assert "explicit layers" in cls.stitch_incompatible({**cls.default_config, "layers": ["a"]}, rn, rn)
    m = create_method("hsnet", toy50)
    with pytest.raises(UserError, match="strides"):
        m.set_backbone(_FlatViT())


class _FlatViT(Backbone):
    """Layers only (four stages at one stride), enough for the compatibility check."""

    arch = "vit"
    name = "flat-vit"

    def __init__(self) -> None:
        super().__init__()
        self._layers = [LayerSpec(f"blocks.{i}", 8, 8, i // 2 + 1) for i in range(8)]

    def _extract(self, x, names):  # pragma: no cover - never run
        raise NotImplementedError


@pytest.mark.parametrize("k,stride", [(3, 1), (3, 2), (5, 4), (5, 1)])
def test_center_pivot_conv4d_single_support_position_equals_the_convolution(k, stride):
    """The 1 x 1 support-dim shortcut (a matrix product with the centre tap) is the convolution,
    values and gradients, including a query branch that is 1 x 1 too."""
    from methods.hsnet.conv4d import branch_conv

    torch.manual_seed(0)
    conv = CenterPivotConv4d(6, 5, (k,) * 4, (1, 1, stride, stride), (k // 2,) * 4)
    for shape in [(2, 6, 3, 4, 1, 1), (2, 6, 1, 1, 1, 1)]:
        conv.zero_grad()
        x = torch.randn(*shape, requires_grad=True)
        y = conv(x)
        y.square().sum().backward()
        got = (x.grad.clone(), conv.conv1.weight.grad.clone(), conv.conv2.weight.grad.clone(), conv.conv2.bias.grad.clone())
        x.grad = None
        conv.zero_grad()
        bsz, ch, ha, wa = shape[:4]
        q = conv.conv1(x.permute(0, 4, 5, 1, 2, 3).reshape(bsz, ch, ha, wa))
        s = conv.conv2(x.permute(0, 2, 3, 1, 4, 5).reshape(bsz * ha * wa, ch, 1, 1))
        ref = q.view(bsz, 5, ha, wa, 1, 1) + s.view(bsz, ha, wa, 5, 1, 1).permute(0, 3, 1, 2, 4, 5)
        ref.square().sum().backward()
        torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
        for a, b in zip(got, (x.grad, conv.conv1.weight.grad, conv.conv2.weight.grad, conv.conv2.bias.grad)):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # beyond a single position (or a kernel tap outside the kernel), the convolution itself runs
    big = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 2, 2)
    assert torch.equal(branch_conv(big, x), big(x))
    far = torch.nn.Conv2d(2, 3, 3, stride=10, padding=3)
    x = torch.randn(4, 2, 1, 1)
    torch.testing.assert_close(branch_conv(far, x), far(x))
