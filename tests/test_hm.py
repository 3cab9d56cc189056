"""Hybrid masking (fssbench.masking): the element-wise rule, the input masking, and the ``hm`` method."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fssbench.errors import UserError
from fssbench.methods import create_method, get_method_class
from fssbench.masking import hybrid_combine, hybrid_masked_features, input_masked_images, mask_features
from methods.hsnet import HM
from methods.hsnet.model import HSNet
from tests.test_hsnet import RN50, ToyResNet, ToyVGG, make_batch

pytestmark = pytest.mark.usefixtures("one_thread")

LAYERS = ["layer2.1", "layer3.0", "layer4.2"]


@pytest.fixture(scope="module")
def toy() -> ToyResNet:
    return ToyResNet(RN50)


def _inputs(h: int = 64, w: int = 64):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, h, w, generator=g)
    masks = torch.zeros(2, h, w)
    masks[0, 8:40, 16:48] = 1
    masks[1, 30:, :30] = 1  # touches a corner: coarse (2x2) maps keep some of it
    return images, masks


def test_input_masking_is_normalised_image_times_mask(toy):
    images, masks = _inputs()
    x = input_masked_images(toy, images, masks)
    # the authors multiply the *normalised* image: the backbone must see normalize(img) * mask
    assert torch.equal(toy.normalize(x), toy.normalize(images) * masks.unsqueeze(1))
    assert torch.equal(input_masked_images(toy, images, masks, fill="zero"), images * masks.unsqueeze(1))
    with pytest.raises(ValueError):
        input_masked_images(toy, images, masks, fill="grey")


def test_hybrid_features_follow_the_rule_elementwise(toy):
    images, masks = _inputs()
    feats = toy(images, LAYERS)
    masked = {
        n: f * F.interpolate(masks.unsqueeze(1), f.shape[-2:], mode="bilinear", align_corners=True) for n, f in feats.items()
    }
    hybrid = hybrid_masked_features(toy, images, masks, LAYERS, masked)
    assert set(hybrid) == set(LAYERS)
    # independent reference: the backbone on the mean-filled image, then the rule per element
    mean = torch.tensor(toy.mean).view(1, 3, 1, 1)
    im_feats = toy(torch.where(masks.unsqueeze(1) > 0, images, mean), LAYERS)
    for n in LAYERS:
        fm, im, hy = masked[n], im_feats[n], hybrid[n]
        pos = fm > 0
        assert pos.any() and (~pos).any()  # both branches are exercised
        assert torch.equal(hy[pos], fm[pos])
        assert torch.equal(hy[~pos], im[~pos])
        assert torch.equal(hy, hybrid_combine(fm, im))
        # outside the mask (feature-masked value 0) the feature comes from the input-masked image
        assert not torch.equal(hy, fm)


def test_hybrid_uses_custom_extractor(toy):
    images, masks = _inputs()
    calls = []

    def extract(x):
        calls.append(x)
        return {n: torch.full_like(f, -1.0) for n, f in toy(x, LAYERS).items()}

    masked = {n: f * 0 + 1.0 for n, f in toy(images, LAYERS).items()}
    masked["layer2.1"][0, 0] = 0.0
    out = hybrid_masked_features(toy, images, masks, LAYERS, masked, extract=extract)
    assert len(calls) == 1
    assert (out["layer2.1"][0, 0] == -1).all() and (out["layer2.1"][0, 1:] == 1).all()


def test_hsnet_hybrid_option_and_hm_method(toy):
    assert get_method_class("hm") is HM and issubclass(HM, HSNet)
    assert HM.default_config["hybrid_masking"] is True
    assert HM.capabilities == HSNet.capabilities
    torch.manual_seed(0)
    hs = HSNet(toy, hybrid_masking=True).eval()
    torch.manual_seed(0)
    hm = create_method("hm", toy).eval()
    torch.manual_seed(0)
    plain = HSNet(toy).eval()
    b = make_batch(bsz=2, shot=2)
    with torch.no_grad():
        # HSNet's support features with the switch on are the HM rule over its own masked features
        s_img, s_mask = b.support_images[:, 0], b.support_fg[:, 0]
        masked = mask_features(plain.extract_features(s_img), s_mask)
        expect = hybrid_masked_features(toy, s_img, s_mask, plain.feature_names, masked)
        got = hs.support_features(s_img, s_mask)
        assert all(torch.equal(got[n], expect[n]) for n in plain.feature_names)
        a, c, p = hs.predict(b), hm.predict(b), plain.predict(b)
    assert torch.equal(a, c)
    assert not torch.equal(a, p)
    assert set(hm.trainable_state()) == set(plain.trainable_state())  # HSNet-HM checkpoints load the same way


def test_hm_with_derived_vgg_pool_layer():
    m = create_method("hm", ToyVGG()).eval()
    b = make_batch(bsz=1, shot=1)
    with torch.no_grad():
        assert m.predict(b).shape == (1, 2, 64, 64)


def test_hm_option_validation(toy):
    with pytest.raises(UserError):
        create_method("hm", toy, hybrid_masking=1)
    assert create_method("hm", toy, hybrid_masking=False).options["hybrid_masking"] is False
