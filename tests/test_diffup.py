"""DiffUp (methods/diffup): BAFT, UAPF and the level rule, DQM targets, the diffusion processes,
stitching, determinism, every annotation kind, options. Tiny widths and 16 px priors on toy data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fssbench.backbones.base import LayerSpec
from fssbench.episode import collate
from fssbench.episodes import load_raw_episode, sample_episodes
from fssbench.errors import UserError
from fssbench.protocols import get_protocol
from methods.diffup import DiffUp
from methods.diffup.baft import AUGMENTATIONS, IDENTITY, affinity_enhance, convert, distance, transform, visual_priors
from methods.diffup.diffusion import OffsetScheduler, PlainScheduler, make_betas
from methods.diffup.dqm import error_target, iou_target
from methods.diffup.uapf import fuse, layer_groups, level_group, select_layers
from tests.toy import ToyBackbone, ToyDataset

TINY = dict(width=4, prior_size=16, timesteps=20, sampling_steps=4, ensemble=2)


pytestmark = pytest.mark.usefixtures("one_thread")


# --- fixtures -------------------------------------------------------------------------------------
class ScaledBackbone(ToyBackbone):
    """The toy backbone with every feature multiplied by a constant."""

    def __init__(self, scale: float, **kw) -> None:
        super().__init__(**kw)
        self.scale = scale

    def _extract(self, x, names):
        return {k: v * self.scale for k, v in super()._extract(x, names).items()}


class TextToyBackbone(ToyBackbone):
    """A toy backbone with a (fixed, random) text tower: prompts hash to unit vectors and the dense
    image embedding is a fixed projection of layer3."""

    name = "toy-text-tower"
    DIM = 16

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        g = torch.Generator().manual_seed(7)
        self.register_buffer("proj", torch.randn(self.DIM, self._layers[2].channels, generator=g))

    @property
    def has_text(self) -> bool:
        return True

    def encode_text(self, prompts):
        out = []
        for p in prompts:
            g = torch.Generator().manual_seed(sum(ord(c) * (i + 1) for i, c in enumerate(p)))
            out.append(torch.randn(self.DIM, generator=g))
        return F.normalize(torch.stack(out), dim=1)

    def dense_image_embedding(self, images):
        f = self(images, ["layer3.0"])["layer3.0"]
        return F.normalize(torch.einsum("dc,bchw->bdhw", self.proj, f), dim=1)


_DS = ToyDataset(".")
_PROTO = get_protocol("hsnet", img_size=32)


def episodes(kind: str = "mask", shot: int = 1, n: int = 3, split: str = "val"):
    specs = sample_episodes(_DS, 0, shot, n, 0, split=split).episodes
    return [_PROTO.prepare(load_raw_episode(_DS, s, 0, kind)) for s in specs]


def batch(kind: str = "mask", shot: int = 1, n: int = 3, seed: int | None = 0):
    return collate(episodes(kind, shot, n), sampling_seed=seed)


def prior_part(m: DiffUp, b, transform_name: str = "cosine") -> list[torch.Tensor]:
    c = m.conditions(b, b.kind, b.support_fg, b.support_bg, transform_name)
    n = 4 + 2 * m.options["selected"]
    return [lv[:, :n] for lv in c.levels]


# --- BAFT -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cosine", "l2:exp", "l1:inv", "l2"])
def test_baft_priors_do_not_depend_on_the_feature_scale(name):
    b = batch()
    a = DiffUp(ToyBackbone(width=8), transform=name, **TINY)
    s = DiffUp(ScaledBackbone(7.0, width=8), transform=name, **TINY)
    for x, y in zip(prior_part(a, b, name), prior_part(s, b, name)):
        assert torch.allclose(x, y, atol=1e-5)


def test_baft_priors_have_the_same_shape_for_any_channel_count():
    b = batch()
    small = prior_part(DiffUp(ToyBackbone(width=8), **TINY), b)
    wide = prior_part(DiffUp(ToyBackbone(width=12, seed=3), **TINY), b)
    assert [t.shape for t in small] == [t.shape for t in wide]
    assert [tuple(t.shape[-2:]) for t in small] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert not torch.allclose(small[0], wide[0])  # different backbones, different priors
    for t in small + wide:
        assert t.min() >= 0 and t.max() <= 1


def test_transforms_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).t().reshape(1, 2, 1, 2)  # positions (1, 0) and (0, 1)
    p = torch.tensor([[[3.0, 0.0]]])  # prototype along (1, 0), norm 3
    assert torch.allclose(transform(q, p, "cosine"), torch.tensor([1.0, 0.5]).view(1, 1, 1, 2))
    assert torch.allclose(distance(q, p, "l2"), torch.tensor([0.0, math.sqrt(2)]).view(1, 1, 1, 2), atol=1e-6)
    assert torch.allclose(distance(q, p, "l1"), torch.tensor([0.0, 2 / math.sqrt(2)]).view(1, 1, 1, 2), atol=1e-6)
    d = torch.tensor([0.0, 1.0, 2.0])
    assert torch.allclose(convert(d, "exp"), torch.exp(-d))
    assert torch.allclose(convert(d, "inv"), torch.tensor([1.0, 0.5, 1 / 3]))
    assert torch.allclose(convert(d, "lin"), torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(UserError, match="l3"):
        DiffUp(ToyBackbone(), transform="l3:exp", **TINY)


def test_l1_distance_range_is_independent_of_the_channel_count():
    g = torch.Generator().manual_seed(0)
    for c in (8, 512):
        q = torch.randn(1, c, 4, 4, generator=g)
        d = distance(q, -q.mean(dim=(2, 3))[:, None], "l1")
        assert 0.8 < float(d.mean()) <= 2.0  # O(1) for 8 and 512 channels alike


def test_affinity_enhancement_averages_over_similar_positions():
    f = torch.zeros(1, 2, 1, 4)
    f[0, 0, 0, :2] = 1.0  # positions 0, 1 alike
    f[0, 1, 0, 2:] = 1.0  # positions 2, 3 alike
    p = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 1, 4)
    out = affinity_enhance(f, p, tau=0.01)
    assert torch.allclose(out, torch.tensor([0.5, 0.5, 0.0, 0.0]).view(1, 1, 1, 4), atol=1e-4)
    const = torch.full((1, 1, 1, 4), 0.3)
    assert torch.allclose(affinity_enhance(torch.randn(1, 2, 1, 4), const, 0.1), const)


def test_image_supports_are_a_whole_image_annotation():
    bb = ToyBackbone(width=8)
    b = batch("image")
    assert b.support_fg is None
    pri, _ = visual_priors(bb, ["layer3.0"], b.query_image, b.support_images, None, None, [IDENTITY], "cosine", None)
    ones = torch.ones(b.support_images.shape[0], 1, 32, 32)
    ref, _ = visual_priors(bb, ["layer3.0"], b.query_image, b.support_images, ones, None, [IDENTITY], "cosine", None)
    assert torch.equal(pri["layer3.0"].priors, ref["layer3.0"].priors)
    p = pri["layer3.0"].priors
    assert torch.allclose(p[:, :, 1], 1 - p[:, :, 0])  # no background annotation: bg = 1 - fg


def test_support_views_add_cues_at_one_shot_only():
    bb = ToyBackbone(width=8)
    m = DiffUp(bb, augment=2, **TINY)
    assert len(m._views(1)) == 3 and len(m._views(5)) == 1
    assert len(DiffUp(bb, augment=2, augment_shots="all", **TINY)._views(5)) == 3
    b = batch()
    pri, _ = visual_priors(bb, ["layer2.0"], b.query_image, b.support_images, b.support_fg, b.support_bg, m._views(1), "cosine", None)
    assert pri["layer2.0"].priors.shape[1] == 3 and pri["layer2.0"].original.tolist() == [True, False, False]
    # the views change the prototypes (so UAPF gets a variance at k = 1)
    assert pri["layer2.0"].priors[:, 1:].sub(pri["layer2.0"].priors[:, :1]).abs().max() > 1e-4
    assert len(AUGMENTATIONS) == 4


# --- UAPF and the level rule ------------------------------------------------------------------------
def _specs(blocks_per_stage, stride_of=lambda s: 4 * 2 ** (s - 1), prefix="layer"):
    out = []
    for st, n in enumerate(blocks_per_stage, start=1):
        for j in range(n):
            out.append(LayerSpec(f"{prefix}{st}.{j}", 64 * st, stride_of(st), st))
    return out


def test_level_rule_for_resnets_vits_and_the_zoo():
    rn50 = select_layers(_specs([3, 4, 6, 3]))
    assert len(rn50) == 13
    assert [len(g) for g in layer_groups(rn50, "stage")] == [4, 6, 3]
    assert [len(g) for g in layer_groups(rn50, "depth")] == [4, 5, 4]
    rn101 = select_layers(_specs([3, 4, 23, 3]))
    assert len(rn101) == 30 and [len(g) for g in layer_groups(rn101, "stage")] == [4, 23, 3]
    vit = _specs([3, 3, 3, 3], stride_of=lambda s: 16, prefix="blocks")
    assert [len(g) for g in layer_groups(select_layers(vit), "stage")] == [3, 3, 3]
    assert [len(g) for g in layer_groups(select_layers(vit, "all"), "depth")] == [4, 4, 4]
    assert [len(g) for g in layer_groups(select_layers(vit, "all"), "stage")] == [4, 4, 4]  # 4 stages: by depth
    zoo_m = select_layers(_specs([2, 2, 3, 2]))
    assert layer_groups(zoo_m, "stage") == [["layer2.0", "layer2.1"], ["layer3.0", "layer3.1", "layer3.2"], ["layer4.0", "layer4.1"]]
    assert layer_groups(select_layers(_specs([1, 1])), "stage") == [["layer1.0"], ["layer2.0"], ["layer2.0"]]
    assert [level_group(j) for j in range(4)] == [0, 1, 2, 2]  # the middle block reads the deepest group
    with pytest.raises(UserError, match="nope"):
        select_layers(rn50, ["nope"])


def test_conditions_have_the_same_shapes_at_k_0_1_and_5():
    bb = TextToyBackbone(width=8)
    m = DiffUp(bb, **TINY)
    shapes = []
    for kind, shot in (("text", 0), ("mask", 1), ("mask", 5), ("bbox", 5), ("scribble", 1), ("image", 1)):
        b = batch(kind, shot, n=2)
        c = m.conditions(b, kind, b.support_fg, b.support_bg, "cosine")
        shapes.append([tuple(t.shape) for t in c.levels] + [tuple(c.prob.shape)])
    assert all(s == shapes[0] for s in shapes)
    assert shapes[0][0] == (2, 4 + 2 * 2 + 2, 16, 16)


def test_uapf_statistics_and_selection_by_hand():
    from methods.diffup.baft import LayerPriors

    v = torch.zeros(1, 3, 2, 16, 16)
    v[0, 0, 0], v[0, 1, 0], v[0, 2, 0] = 0.2, 0.4, 0.9  # fg priors of three cues
    v[:, :, 1] = 0.5
    fused = fuse({"a": LayerPriors(v, torch.tensor([True, False, False]))}, [["a"], ["a"], ["a"]], 16, selected=2)
    lv = fused.levels[0]
    assert lv.shape == (1, 8, 16, 16)
    assert torch.allclose(lv[0, 0], torch.full((16, 16), 0.5))  # mean fg
    assert torch.allclose(lv[0, 2], torch.full((16, 16), float(np.std([0.2, 0.4, 0.9]))), atol=1e-6)  # std fg
    assert torch.allclose(lv[0, 3], torch.zeros(16, 16))  # std bg
    # selected: the cues nearest the mean (0.4 first, then 0.2)
    assert torch.allclose(lv[0, 4], torch.full((16, 16), 0.4)) and torch.allclose(lv[0, 6], torch.full((16, 16), 0.2))
    assert torch.allclose(fused.prob, torch.full((1, 1, 16, 16), 0.5 / 1.0))
    one = fuse({"a": LayerPriors(v[:, :1], torch.tensor([True]))}, [["a"]] * 3, 16, selected=2)
    assert torch.equal(one.levels[0][:, 4:6], one.levels[0][:, 6:8])  # fewer cues than selected: repeated


def test_uapf_is_symmetric_in_the_supports():
    bb = ToyBackbone(width=8)
    m = DiffUp(bb, **TINY)
    b = batch("mask", 3, n=2)
    perm = [2, 0, 1]
    b2 = collate(episodes("mask", 3, n=2), sampling_seed=0)
    b2.support_images, b2.support_fg, b2.support_bg = b.support_images[:, perm], b.support_fg[:, perm], b.support_bg[:, perm]
    for x, y in zip(prior_part(m, b), prior_part(m, b2)):
        assert torch.allclose(x, y, atol=1e-6)


def test_text_only_path_uses_the_prompt():
    bb = TextToyBackbone(width=8)
    m = DiffUp(bb, **TINY)
    b = batch("text", 0, n=2)
    assert b.shot == 0
    c1 = m.conditions(b, "text", None, None, "cosine")
    b.prompts = ["a photo of a something else"] * 2
    c2 = m.conditions(b, "text", None, None, "cosine")
    assert not torch.allclose(c1.levels[0][:, :4], c2.levels[0][:, :4])
    m.eval()
    pred = m.predict(batch("text", 0, n=2))
    assert pred.scores.shape == (2, 2, 32, 32) and torch.isfinite(pred.scores).all()
    with pytest.raises(UserError, match="text tower"):
        DiffUp(ToyBackbone(), **TINY).conditions(b, "text", None, None, "cosine")


# --- query information --------------------------------------------------------------------------------
def test_sobel_and_canny_find_a_square_edge():
    from methods.diffup.query_info import canny, sobel

    img = torch.zeros(1, 3, 32, 32)
    img[:, :, 8:24, 8:24] = 1.0
    s, c = sobel(img), canny(img)
    assert s.max() == pytest.approx(1.0) and s[0, 0, 16, 16] == 0 and s[0, 0, 8, 16] > 0.5
    assert c[0, 0, 16, 16] == 0 and c[0, 0, 7:9, 16].max() == 1 and c.sum() > 40


def test_vae_condition_needs_its_folder_and_adds_four_channels(tmp_path):
    with pytest.raises(UserError, match="vae_path") as err:
        DiffUp(ToyBackbone(), query_info=["sobel", "vae"], vae_path=str(tmp_path / "missing"), **TINY)
    assert len(str(err.value).splitlines()) == 1 and "missing" in str(err.value)
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, layers_per_block=1,
    ).save_pretrained(tmp_path / "vae")
    m = DiffUp(ToyBackbone(), query_info=["sobel", "vae"], vae_path=str(tmp_path / "vae"), **TINY)
    b = batch()
    c = m.conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    assert c.levels[0].shape[1] == 8 + 1 + 4
    assert not any(k.startswith("vae") for k in m.state_dict())  # frozen, never saved with the decoder


# --- DQM ------------------------------------------------------------------------------------------------
def test_dqm_targets_by_hand():
    x0 = torch.tensor([[[[1.0, 1.0], [-1.0, -1.0]]]])
    xt = torch.tensor([[[[0.5, -0.2], [0.3, -2.0]]]])
    assert torch.allclose(error_target(x0, xt), torch.tensor([[[[0.5, 1.2], [-1.3, 1.0]]]]))
    # binarised x_t = [[1, 0], [1, 0]], truth [[1, 1], [0, 0]]: inter 1, union 3
    assert iou_target(xt, x0).tolist() == pytest.approx([1 / 3])
    valid = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # drop the missed pixel: inter 1, union 2
    assert iou_target(xt, x0, valid).tolist() == pytest.approx([0.5])
    empty = -torch.ones(1, 1, 2, 2)
    assert iou_target(empty, empty).tolist() == [1.0]


# --- diffusion ----------------------------------------------------------------------------------------
def test_plain_scheduler_is_diffusers_and_offset_zero_equals_it():
    betas = make_betas(50)
    plain, off = PlainScheduler(betas), OffsetScheduler(betas)
    assert plain.alphas_cumprod[-1] < 1e-3  # the scaled linear schedule reaches (almost) pure noise
    g = torch.Generator().manual_seed(0)
    x0, eps, out = (torch.randn(2, 1, 4, 4, generator=g) for _ in range(3))
    t = torch.tensor([3, 40])
    assert torch.allclose(plain.add_noise(x0, eps, t), off.add_noise(x0, eps, t), atol=1e-6)
    for s in (plain, off):
        s.set_timesteps(10)
    assert plain.timesteps.tolist() == off.timesteps.tolist() == list(range(45, -1, -5))
    for step in off.timesteps.tolist():
        assert torch.allclose(plain.step(out, step, x0), off.step(out, step, x0), atol=1e-5)
    # the DDPM posterior at offset 0 is diffusers' DDPM step (same standard normal draw)
    from diffusers import DDPMScheduler

    ref = DDPMScheduler(num_train_timesteps=50, trained_betas=betas.tolist(), clip_sample=False, variance_type="fixed_small")
    ours = off.ddpm_step(out, 30, x0, noise=torch.randn(x0.shape, generator=torch.Generator().manual_seed(5)))
    theirs = ref.step(out, 30, x0, generator=torch.Generator().manual_seed(5)).prev_sample
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_offset_scheduler_inverts_its_forward_process(prediction):
    s = OffsetScheduler(make_betas(50), prediction)
    g = torch.Generator().manual_seed(1)
    x0 = torch.sign(torch.randn(1, 1, 8, 8, generator=g))
    m = 0.7 * torch.tanh(torch.randn(1, 1, 8, 8, generator=g))
    eps = torch.randn(1, 1, 8, 8, generator=g)
    s.set_timesteps(10)
    for t in s.timesteps.tolist():  # the true model output walks the forward marginals backwards ...
        xt = s.add_noise(x0, eps, torch.tensor([t]), m)
        out = eps if prediction == "epsilon" else x0
        prev = s.step(out, t, xt, m)
        want = x0 if t == 0 else s.add_noise(x0, eps, torch.tensor([t - 5]), m)
        assert torch.allclose(prev, want, atol=1e-4)  # ... and lands on x_0 at t -> 0
    # far in the chain the forward process forgets x_0 and drifts to the condition mean m
    xT = s.add_noise(x0, torch.zeros_like(x0), torch.tensor([49]), m)
    assert torch.allclose(xT, m, atol=0.02)


def test_offset_posterior_is_bayes_rule():
    s = OffsetScheduler(make_betas(50))
    x0, xt, m, t = torch.tensor(0.8), torch.tensor(-0.3), torch.tensor(0.4), 17
    ab_prev, a, b = float(s.alphas_cumprod[t - 1]), float(s.alphas[t]), float(s.betas[t])
    mu_p = math.sqrt(ab_prev) * 0.8 + (1 - math.sqrt(ab_prev)) * 0.4  # q(x_{t-1} | x_0, c)
    var_p = 1 - ab_prev
    prec = 1 / var_p + a / b  # times q(x_t | x_{t-1}, c) = N(sqrt(a) x + (1 - sqrt(a)) m, b)
    mean = (mu_p / var_p + math.sqrt(a) * (-0.3 - (1 - math.sqrt(a)) * 0.4) / b) / prec
    got_mean, got_var = s.posterior(x0, xt, t, m)
    assert float(got_mean) == pytest.approx(mean, rel=1e-6) and got_var == pytest.approx(1 / prec, rel=1e-6)


def test_offset_process_starts_sampling_at_the_prior():
    m = DiffUp(ToyBackbone(width=8), **TINY)
    b = batch()
    cond = m.conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    off = m._offset(cond.prob)
    assert torch.allclose(off, 2 * cond.prob - 1)
    assert DiffUp(ToyBackbone(width=8), process="ddpm", **TINY)._offset(cond.prob) is None


# --- the method ---------------------------------------------------------------------------------------
def test_capabilities():
    caps = DiffUp.capabilities
    assert caps.supports("text", 0) is None and caps.supports("text", 1) and caps.supports("mask", 0)
    for kind in ("mask", "bbox", "scribble", "image"):
        assert caps.supports(kind, 1) is None and caps.supports(kind, 10) is None
    assert caps.stitchable and caps.trains
    assert DiffUp.eval_options == {"transform", "sampling_steps", "ensemble", "eta", "record_trajectory"}
    assert DiffUp.mask_outputs == {"prior"}


def test_prediction_outputs_and_trajectory_only_when_asked():
    m = DiffUp(ToyBackbone(width=8), **TINY).eval()
    p = m.predict(batch())
    assert p.scores.shape == (3, 2, 32, 32) and torch.allclose(p.scores.sum(1), torch.ones(3, 32, 32))
    assert p.masks["prior"].shape == (3, 32, 32) and 0 <= p.masks["prior"].min() and p.masks["prior"].max() <= 1
    assert p.scalars["pred_iou"].shape == (3,) and p.artefacts == {}
    m.options["record_trajectory"] = True
    b = batch()
    # an artefact option: recording never changes the prediction (reports compare runs across it)
    assert "record_trajectory" in DiffUp.artefact_options and torch.equal(m.predict(batch()).scores, p.scores)
    assert set(m.predict(b).artefacts) == {"trajectory", "error_maps", "prior_lowres", "trajectory_remaining", "error_maps_noise"}
    cond = m.conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    prob, _, a = m.sample(cond, b)
    assert a["trajectory"].shape == (3, 6, 16, 16) and a["error_maps"].shape == (3, 3, 16, 16)
    assert torch.allclose(a["trajectory"][:, -1], prob[:, 0])  # the last slot is the result
    assert not torch.allclose(a["trajectory"][:, 0], prob[:, 0])  # the first is the start noise


def test_same_seed_same_prediction_and_independent_of_batch_composition():
    torch.manual_seed(0)
    m = DiffUp(ToyBackbone(width=8), eta=0.5, **TINY).eval()
    eps = episodes("mask", 1, n=3)
    together = m.predict(collate(eps, sampling_seed=0))
    torch.manual_seed(123)  # the global RNG plays no part at evaluation
    alone = m.predict(collate(eps[1:2], sampling_seed=0))
    again = m.predict(collate(eps, sampling_seed=0))
    assert torch.equal(together.scores, again.scores)
    assert torch.allclose(together.scores[1:2], alone.scores, atol=1e-5)
    assert torch.allclose(together.scalars["pred_iou"][1:2], alone.scalars["pred_iou"], atol=1e-5)
    other = m.predict(collate(eps, sampling_seed=1))
    assert not torch.allclose(other.scores, together.scores)


def test_parameter_count_is_the_same_for_every_backbone_and_the_default_is_the_papers():
    from fssbench.backbones import create_backbone

    rn_s, vit, rn_m = (create_backbone(n) for n in ("zoo-rn-s", "zoo-vit", "zoo-rn-m"))
    assert len({len(b.layers) for b in (rn_s, vit, rn_m)}) == 3 and len({b.layers[-1].channels for b in (rn_s, vit, rn_m)}) == 3
    counts = {DiffUp(b, width=8, prior_size=32).parameter_count() for b in (rn_s, vit, rn_m)}
    assert len(counts) == 1 and 150_000 < counts.pop() < 500_000
    default = DiffUp(rn_s).parameter_count()
    assert 4.0e6 < default < 4.4e6 and DiffUp(vit).parameter_count() == default


def test_stitching_loads_strictly_across_backbones_and_lfe_refuses():
    from fssbench.backbones import create_backbone

    rn_s, vit = create_backbone("zoo-rn-s"), create_backbone("zoo-vit")
    torch.manual_seed(0)
    a = DiffUp(rn_s, **TINY)
    b = DiffUp(vit, **TINY)
    sa, sb = a.trainable_state(), b.trainable_state()
    assert {k: v.shape for k, v in sa.items()} == {k: v.shape for k, v in sb.items()}
    b.load_state_dict(sa, strict=True)
    a.set_backbone(vit)  # stitch: no re-training, no code change
    assert a.layer_names == [s.name for s in vit.layers if s.stage >= 2]
    assert torch.allclose(a.eval().predict(batch()).scores, b.eval().predict(batch()).scores, atol=1e-5)
    lfe = DiffUp(rn_s, lfe=True, **TINY)
    assert DiffUp.stitch_refused({"lfe": True}) and DiffUp.stitch_refused({"lfe": False}) is None
    with pytest.raises(UserError, match="lfe"):
        lfe.set_backbone(vit)
    assert lfe.parameter_count() > a.parameter_count()
    rn_m = create_backbone("zoo-rn-m")  # its first stage is 80 channels wide, zoo-rn-s's 64
    assert DiffUp(rn_m, lfe=True, **TINY).parameter_count() != lfe.parameter_count()  # LFE ties the decoder to its backbone


def test_explicit_layers_are_incompatible_with_a_backbone_without_them():
    from fssbench.backbones import get_backbone_info

    opts = {**DiffUp.default_config, "layers": ["layer3.0", "layer4.0"]}
    assert "do not exist" in DiffUp.stitch_incompatible(opts, None, get_backbone_info("zoo-vit"))
    assert DiffUp.stitch_incompatible(opts, None, get_backbone_info("zoo-rn-m")) is None
    assert DiffUp.stitch_incompatible(DiffUp.default_config, None, get_backbone_info("zoo-vit")) is None


def test_loss_trains_and_samples_kinds_and_transforms(monkeypatch):
    torch.manual_seed(0)
    m = DiffUp(ToyBackbone(width=8), train_kinds=["bbox", "scribble", "image"], train_transforms=["l1:exp", "l2:inv"], **TINY)
    seen: list[tuple[str, str]] = []
    orig = m.conditions

    def spy(b, kind, fg, bg, t):
        seen.append((kind, t))
        if kind == "bbox":  # the derived boxes are the annotation module's
            from fssbench.annotations import derive_annotation

            ref = derive_annotation("bbox", b.support_fg[0, 0].numpy() > 0.5, b.support_ignore[0, 0].numpy())
            assert np.array_equal(fg[0, 0].numpy(), ref.fg)
        return orig(b, kind, fg, bg, t)

    monkeypatch.setattr(m, "conditions", spy)
    b = collate(episodes("mask", 1, n=2, split="trn"))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    for _ in range(12):
        loss, logs = m.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss) and set(logs) == {"loss", "diff", "err", "iou"}
    assert {k for k, _ in seen} == {"bbox", "scribble", "image"} and {t for _, t in seen} == {"l1:exp", "l2:inv"}
    assert all(p.grad is not None for p in m.unet.dqm.parameters())


def test_sample_prediction_and_plain_process_train_and_predict():
    for opts in ({"prediction": "sample"}, {"process": "ddpm"}):
        m = DiffUp(ToyBackbone(width=8), **TINY, **opts)
        loss, _ = m.loss(collate(episodes("mask", 1, n=2, split="trn")))
        loss.backward()
        assert torch.isfinite(m.eval().predict(batch()).scores).all()


def test_bf16_autocast_predicts():
    m = DiffUp(ToyBackbone(width=8), **TINY).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = m.predict(batch())
    assert torch.isfinite(p.scores).all() and p.scores.dtype == torch.float32


@pytest.mark.parametrize(
    "opts, what",
    [
        ({"width": 6}, "width"),
        ({"prior_size": 20}, "prior_size"),
        ({"augment": 9}, "augment"),
        ({"train_kinds": ["text"]}, "text tower"),
        ({"train_kinds": ["polygon"]}, "train_kinds"),
        ({"process": "sde"}, "process"),
        ({"sampling_steps": 30}, "sampling_steps"),
        ({"selected": -1}, "selected"),
        ({"query_info": ["hog"]}, "query_info"),
        ({"prior_norm": "zscore"}, "prior_norm"),
    ],
)
def test_bad_options_are_one_line_errors(opts, what):
    with pytest.raises(UserError, match=what) as err:
        DiffUp(ToyBackbone(), **{**TINY, **opts})
    assert len(str(err.value).splitlines()) == 1


def test_minor_options_act():
    bb = ToyBackbone(width=8)
    b = batch()
    # prior_norm: minmax spreads every level's prior maps over [0, 1]
    c = DiffUp(bb, prior_norm="minmax", augment=0, **TINY).conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    fg_mean = c.levels[0][:, 0]  # one cue: its mean is its own normalised map
    assert torch.allclose(fg_mean.amin(dim=(1, 2)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(fg_mean.amax(dim=(1, 2)), torch.ones(3), atol=1e-6)
    # prior_norm: standard gives every condition map zero mean and unit spread, the fused
    # probability (drift target, "prior" output) stays that of the raw priors
    raw = DiffUp(bb, augment=0, **TINY).conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    c = DiffUp(bb, prior_norm="standard", augment=0, **TINY).conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    fg_mean = c.levels[0][:, 0]  # (the toy's deeper maps are constant: those become 0)
    assert torch.allclose(fg_mean.mean(dim=(1, 2)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(fg_mean.std(dim=(1, 2), unbiased=False), torch.ones(3), atol=1e-3)
    assert c.levels[-1][:, 0].abs().max() < 1e-2
    assert torch.equal(c.prob, raw.prob) and not torch.allclose(c.levels[0][:, 0], raw.levels[0][:, 0])
    # offset_scale scales the condition mean
    m = DiffUp(bb, offset_scale=2.0, **TINY)
    c = m.conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    assert torch.allclose(m._offset(c.prob), 2 * (2 * c.prob - 1))
    # query_info: [] drops the edge channels; selected sets the number of extra priors
    c = DiffUp(bb, query_info=[], selected=1, **TINY).conditions(b, "mask", b.support_fg, b.support_bg, "cosine")
    assert c.levels[0].shape[1] == 4 + 2
    # layers: all / level_rule: depth
    m = DiffUp(bb, layers="all", level_rule="depth", **TINY)
    assert m.layer_names == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"] and m.groups == [["layer1.0"], ["layer2.0", "layer3.0"], ["layer4.0"]]
    # the DQM loss weights
    torch.manual_seed(0)
    _, logs = DiffUp(bb, lambda_err=0.0, lambda_iou=0.0, **TINY).loss(collate(episodes("mask", 1, n=2, split="trn")))
    assert logs["loss"] == pytest.approx(logs["diff"])
    # the cosine schedule also ends (almost) at pure noise, with decreasing alpha-bar
    ab = torch.cumprod(1 - make_betas(250, "cosine").double(), 0)
    assert ab[-1] < 1e-4 and bool((ab[1:] < ab[:-1]).all())


@pytest.mark.parametrize("quality", ["full", "no_iou", "no_err", "none"])
def test_quality_ablations_drop_what_they_name_and_still_train_and_sample(quality):
    """Table 6's DQM ablations: each variant builds, trains one step and samples; the heads and
    losses it drops are gone (no parameter, zero loss term, no pred_iou output)."""
    bb = ToyBackbone(width=8)
    torch.manual_seed(0)
    m = DiffUp(bb, quality=quality, augment=0, **TINY)
    names = {n for n, _ in m.named_parameters()}
    has = {"err": any(".dqm.error." in n for n in names), "iou": any(".dqm.iou." in n for n in names),
           "qscm": any(".qscm." in n for n in names)}
    want = {"full": (True, True, True), "no_iou": (True, False, True), "no_err": (True, True, True), "none": (False, False, False)}
    assert (has["err"], has["iou"], has["qscm"]) == want[quality]
    loss, parts = m.loss(batch())
    loss.backward()
    assert torch.isfinite(loss)
    assert (parts["err"] == 0.0) == (quality == "none") and (parts["iou"] == 0.0) == (quality in ("none", "no_iou"))
    m.eval()
    pred = m.predict(batch())
    assert pred.scores.shape[1] == 2 and ("pred_iou" in pred.scalars) == (quality in ("full", "no_err"))
    if quality in ("full", "no_err"):  # what the DQM SCMs are conditioned on: e^, or nothing
        seen = []
        for q in m.unet.qscm:
            q.register_forward_hook(lambda mod, args, out: seen.append(args[1].abs().max().item()))
        m.predict(batch())
        assert seen and (max(seen) == 0.0) == (quality == "no_err")
    with pytest.raises(UserError, match="quality"):
        DiffUp(bb, quality="half", **TINY)


def test_decoders_from_before_the_quality_option_still_load(tmp_path):
    """A decoder file written before `quality` existed (its options lack the key) loads into the
    default model; one trained with an ablation does not load into the full model."""
    from fssbench.engine.checkpoint import load_decoder, save_decoder

    bb = ToyBackbone(width=8)
    torch.manual_seed(0)
    full = DiffUp(bb, **TINY)
    assert "quality" not in DiffUp.training_options(full.options)
    p = tmp_path / "d.pt"
    save_decoder(full, p)
    ck = torch.load(p, weights_only=True)
    assert "quality" not in ck["options"]  # what an older fssbench wrote, too
    load_decoder(p, DiffUp(bb, **TINY))
    load_decoder(p, DiffUp(bb, quality="full", **TINY))
    save_decoder(DiffUp(bb, quality="none", **TINY), p)
    with pytest.raises(UserError, match="quality"):
        load_decoder(p, DiffUp(bb, **TINY))
