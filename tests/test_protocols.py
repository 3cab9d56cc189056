"""Protocols: resizing, padding, original-size scoring and their episode counts."""

import pytest
import torch

from fssbench.episodes import load_raw_episode, sample_episodes
from fssbench.errors import UserError
from fssbench.protocols import get_protocol
from tests.toy import ToyDataset


def _episode(protocol, kind="mask", shot=2):
    ds = ToyDataset(size=40)
    spec = sample_episodes(ds, 0, shot, 3, seed=0).episodes[1]
    return protocol.prepare(load_raw_episode(ds, spec, 0, kind))


def perfect_scores(mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    return torch.stack([1 - m, m])


def test_hsnet_square_resize_and_perfect_score():
    proto = get_protocol("hsnet", img_size=64)
    ep = _episode(proto)
    assert ep.query_image.shape == (3, 64, 64) and ep.support_images.shape == (2, 3, 64, 64)
    assert ep.support_fg.shape == (2, 64, 64) and ep.query_ignore.dtype == torch.bool
    assert 0.0 <= float(ep.query_image.min()) and float(ep.query_image.max()) <= 1.0
    rec = proto.score(perfect_scores(ep.query_mask), ep)
    assert rec.inter_fg == rec.union_fg > 0 and rec.inter_bg == rec.union_bg


def test_pfenet_keeps_aspect_pads_and_scores_on_original():
    proto = get_protocol("pfenet", img_size=60)
    ds = ToyDataset(size=40)
    spec = sample_episodes(ds, 0, 1, 2, seed=0).episodes[0]
    raw = load_raw_episode(ds, spec, 0, "mask")
    # make the query non-square to exercise the aspect rule
    raw.query_image = raw.query_image[:, :30]
    raw.query_mask = raw.query_mask[:, :30]
    raw.query_ignore = raw.query_ignore[:, :30]
    ep = proto.prepare(raw)
    assert ep.geometry["resized"] == (60, 45)
    assert bool(ep.query_ignore[:, 45:].all()), "padding must be ignored"
    rec = proto.score(perfect_scores(ep.query_mask), ep)
    label = raw.query_mask.astype(bool) & ~raw.query_ignore
    # scored on the original 40x30 label: the union never exceeds its pixel count
    assert rec.union_fg + rec.union_bg <= 40 * 30
    assert rec.inter_fg >= 0.9 * label.sum()


def test_image_and_text_kinds_carry_no_masks():
    proto = get_protocol("hsnet", img_size=32)
    for kind in ("image", "text"):
        ep = _episode(proto, kind=kind)
        assert ep.support_fg is None and ep.support_bg is None
        assert ep.prompt == f"a photo of a {ep.class_name}"


def test_zero_shot_text_episode():
    proto = get_protocol("hsnet", img_size=32)
    ep = _episode(proto, kind="text", shot=0)
    assert ep.shot == 0 and ep.support_images.shape == (0, 3, 32, 32)


def test_unknown_protocol_and_setting():
    with pytest.raises(UserError, match="unknown protocol"):
        get_protocol("nope")
    with pytest.raises(UserError, match="no setting"):
        get_protocol("hsnet", img_sz=3)
    assert get_protocol("pfenet").episodes_for("coco") == 20000
    assert get_protocol("hsnet").episodes_for("pascal") == 1000


@pytest.mark.parametrize("name", ["hsnet", "pfenet"])
def test_batch_scoring_gives_the_integers_of_episode_by_episode_scoring(name):
    ds = ToyDataset()
    proto = get_protocol(name, img_size=48) if name == "hsnet" else get_protocol(name, img_size=48, keep_aspect=True)
    specs = sample_episodes(ds, 0, 1, 6, seed=3).episodes
    eps = [proto.prepare(load_raw_episode(ds, s, 0, "mask")) for s in specs]
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(len(eps), 2, 48, 48, generator=g)
    scores[0] = 0.0  # ties go to background, as argmax does
    probs = torch.rand(len(eps), 48, 48, generator=g)
    probs[1] = 0.5
    for s in (scores, probs):
        one = [proto.score(s[i], ep) for i, ep in enumerate(eps)]
        assert proto.score_batch(s, eps) == one


def test_foreground_is_argmax_including_ties_and_nans():
    from fssbench.protocols import foreground

    nan = float("nan")
    pairs = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (nan, 0.0), (0.0, nan), (nan, nan), (-1.0, -1.0)]
    s = torch.tensor(pairs).T.reshape(2, 1, len(pairs))
    assert torch.equal(foreground(s, 0), s.argmax(0) == 1)
    s3 = torch.randn(3, 4, 5)
    assert torch.equal(foreground(s3, 0), s3.argmax(0) == 1)
