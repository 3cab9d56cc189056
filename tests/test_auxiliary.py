"""DifFSS-style auxiliary supports: conditions, the three backends, the cache, consumption as extra
shots by every method, and a suite end to end through the report."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fssbench.auxiliary.cache import AuxCache, cache_key
from fssbench.auxiliary.conditions import (
    CLASSICAL_EDGES,
    ellipse_kernel,
    hed_condition,
    make_condition,
    scribble_condition,
    seg_condition,
    sobel_soft_edges,
)
from fssbench.auxiliary.generators import (
    AuxRequest,
    ControlNetGenerator,
    OfflineGenerator,
    PregeneratedSource,
    controlnet_missing,
    reference_name,
)
from fssbench.auxiliary.hed import HEDNet, load_hed
from fssbench.auxiliary.supplier import DEFAULTS, AuxSupplier, aux_seed, run_aux_config
from fssbench.engine.evaluate import evaluate
from fssbench.episodes import load_raw_episode, sample_episodes
from fssbench.errors import MissingFileError, UserError
from fssbench.protocols import get_protocol
from tests import toy

pytestmark = pytest.mark.usefixtures("one_thread")


def _square(h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((h, w, 3), 50, np.uint8)
    img[10:30, 12:36] = (200, 80, 40)
    img[18:22, 12:36] = (20, 20, 200)  # an inner stripe: structure inside the object
    mask = np.zeros((h, w), np.uint8)
    mask[10:30, 12:36] = 1
    return img, mask


def _settings(**kw):
    return {**DEFAULTS, **run_aux_config({**DEFAULTS, **kw}, kw.get("condition", "mask")), **kw}


# --- conditions ------------------------------------------------------------------------------------
def test_conditions_follow_the_mask():
    img, mask = _square()
    seg = seg_condition(mask, 7)
    assert (seg[mask == 0] == 0).all() and (seg[mask == 1] > 0).any(axis=-1).all()
    assert (seg[mask == 1] == seg[15, 20]).all()  # one colour per class
    assert not np.array_equal(seg_condition(mask, 8)[15, 20], seg[15, 20])
    assert tuple(seg_condition(mask, 7, {7: (1, 2, 3)})[15, 20]) == (1, 2, 3)
    e = sobel_soft_edges(img)
    assert e.shape == mask.shape and 0 <= e.min() and e.max() <= 1
    assert e[10, 20] > 0.5 > e[2, 2]  # on the object's edge, not on flat background
    hed = hed_condition(img, mask, sobel_soft_edges)
    from scipy import ndimage

    outside = ~ndimage.binary_dilation(mask.astype(bool), structure=ellipse_kernel(14))
    assert hed.shape == (*mask.shape, 3) and (hed[outside] == 0).all() and hed.max() > 127
    sc = scribble_condition(img, mask, sobel_soft_edges)
    assert set(np.unique(sc)) <= {0, 255} and (sc > 0).sum() < (hed > 0).sum()
    with pytest.raises(UserError, match="unknown aux condition"):
        make_condition("depth", img, mask, 1, sobel_soft_edges)


def test_hed_network_loads_its_state_dict_strictly(tmp_path):
    torch.manual_seed(0)
    net = HEDNet()
    p = tmp_path / "ControlNetHED.pth"
    torch.save(net.state_dict(), p)
    det = load_hed(p)
    img, _ = _square()
    e = det(img)
    assert e.shape == img.shape[:2] and e.dtype == np.float32 and 0 <= e.min() <= e.max() <= 1
    torch.save({"block1.convs.0.weight": torch.zeros(1)}, p)
    with pytest.raises(UserError, match="do not match") as err:
        load_hed(p)
    assert len(str(err.value).splitlines()) == 1


# --- offline ----------------------------------------------------------------------------------------
def test_offline_generator_is_aligned_diverse_and_seeded():
    img, mask = _square()
    gen = OfflineGenerator()
    req = AuxRequest("s", 1, "thing", img, mask, "mask", seg_condition(mask, 1), (1, 2, 3))
    a = gen.generate(req)
    assert len(a) == 3 and all(x.shape == img.shape and x.dtype == np.uint8 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, gen.generate(req)))  # same seeds, same images
    assert not np.array_equal(a[0], a[1])  # different seeds, different images
    inside, outside = mask.astype(bool), ~mask.astype(bool)
    for x in a:  # appearance changes inside and outside the object
        assert np.abs(x[inside].astype(int) - img[inside]).mean() > 5
        assert np.abs(x[outside].astype(int) - img[outside]).mean() > 5
    # the condition decides how much inner structure survives (as on a ControlNet): hed > mask
    def stripe_contrast(cond: str) -> float:
        r = AuxRequest("s", 1, "thing", img, mask, cond, make_condition(cond, img, mask, 1, sobel_soft_edges), (5,))
        x = gen.generate(r)[0].astype(float)
        return float(np.abs(x[19:21, 16:32].mean(axis=(0, 1)) - x[12:16, 16:32].mean(axis=(0, 1))).sum())
    assert stripe_contrast("hed") > stripe_contrast("mask")


# --- pregenerated, fallback, consumption -------------------------------------------------------------
def _episode(ds, fold=0, shot=1, n=4, kind="mask"):
    specs = sample_episodes(ds, fold, shot, n, 0).episodes
    return specs, [load_raw_episode(ds, s, fold, kind) for s in specs]


def test_pregenerated_reads_reference_names_and_counts_fallbacks(tmp_path):
    ds = toy.ToyDataset()
    specs, raws = _episode(ds)
    first = specs[0].supports[0]
    assert reference_name("JPEGImages/2008_000123", 5, 2) == "2008_000123_5_2"
    d = tmp_path / "pre"
    d.mkdir()
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(d / f"{reference_name(first, specs[0].class_id, 0)}.jpg")
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(d / f"{reference_name(first, specs[0].class_id, 1)}.png")
    sup = AuxSupplier({**DEFAULTS, "backend": "pregenerated", "dir": str(d), "condition": "mask", "aux_shots": 3},
                      ds, AuxCache(tmp_path / "c"))
    out = sup.extend(raws[0])
    assert out.shot == 4 and raws[0].shot == 1
    real = raws[0].shots[0]
    aux = out.shots[1:]
    assert aux[0].image.shape == real.image.shape  # resized to the support's size
    assert abs(float(aux[0].image.mean()) - 200) < 3 and abs(float(aux[1].image.mean()) - 100) < 3
    assert np.array_equal(aux[2].image, real.image) and aux[2].name.endswith("fallback")  # missing -> real support
    assert all(a.annotation is real.annotation for a in aux)  # the support's own annotation
    assert sup.fallbacks[specs[0].episode_id] == 1
    assert sup.summary([specs[0].episode_id])["fallbacks"] == 1
    with pytest.raises(MissingFileError, match="not found"):
        PregeneratedSource(tmp_path / "nowhere")


class _Counting(OfflineGenerator):
    calls = 0

    def generate(self, req):
        type(self).calls += len(req.seeds)
        return super().generate(req)


def test_cache_generates_each_image_once_and_resumes(tmp_path):
    ds = toy.ToyDataset()
    specs = sample_episodes(ds, 0, 1, 6, 0).episodes
    cfg = {**DEFAULTS, "condition": "hed", "aux_shots": 2}

    def supplier():
        s = AuxSupplier(cfg, ds, AuxCache(tmp_path / "c"))
        s.generator = _Counting()
        return s

    s1 = supplier()
    made = s1.generate(specs)
    pairs = {(s.supports[0], s.support_class_id) for s in specs}
    assert made == 2 * len(pairs) == _Counting.calls
    assert supplier().generate(specs) == 0 and _Counting.calls == made  # a second run generates nothing
    # a killed generation: some images missing -> only those are generated
    files = sorted((tmp_path / "c").rglob("*.png"))
    files[0].unlink()
    files[1].unlink()
    assert supplier().generate(specs) == 2 and _Counting.calls == made + 2
    # the key names everything the image depends on
    k = cache_key("a", 1, "hed", {"backend": "offline"}, 3)
    assert k != cache_key("a", 1, "mask", {"backend": "offline"}, 3) != cache_key("a", 1, "hed", {"backend": "offline"}, 4)
    assert k != cache_key("a", 1, "hed", {"backend": "controlnet", "weights_sha256": "x"}, 3)
    assert aux_seed(0, "a", 1, 0) != aux_seed(0, "a", 1, 1) != aux_seed(1, "a", 1, 0)
    assert s1.summary([s.episode_id for s in specs])["edges"] == CLASSICAL_EDGES


@pytest.mark.parametrize("name,opts", [
    ("prototype", {}),
    ("hsnet", {}),
    ("hm", {}),
    ("diffup", {"width": 4, "prior_size": 16, "timesteps": 20, "sampling_steps": 2, "ensemble": 1, "augment": 1}),
])
def test_every_method_takes_aux_shots_as_extra_shots(tmp_path, name, opts):
    from fssbench.methods import create_method

    ds = toy.ToyDataset()
    specs = sample_episodes(ds, 0, 1, 3, 0).episodes
    bb = toy.ToyBackbone()
    m = create_method(name, bb, **opts)
    seen = []
    orig = m.predict
    m.predict = lambda batch: (seen.append(batch.shot), orig(batch))[1]
    sup = AuxSupplier({**DEFAULTS, "condition": "mask", "aux_shots": 2}, ds, AuxCache(tmp_path / "c"))
    out = evaluate(m, ds, specs, 0, "mask", get_protocol("hsnet", img_size=32), batch_size=3, extend=sup.extend,
                   episode_extras=lambda e: {"aux_fallbacks": float(sup.fallbacks.get(e, 0))}, n_boot=10)
    assert seen == [3] and len(out.records) == 3
    assert all(r.extras["aux_fallbacks"] == 0 for r in out.records)


# --- controlnet ---------------------------------------------------------------------------------------
def test_controlnet_backend_missing_weights_is_one_line(tmp_path):
    line = controlnet_missing(None, "mask")
    assert "--weights-dir" in line and "stable-diffusion-v1-5" in line and len(line.splitlines()) == 1
    line = controlnet_missing(tmp_path, "hed")
    assert str(tmp_path / "controlnet" / "stable-diffusion-v1-5") in line and "nothing is downloaded" in line
    with pytest.raises(MissingFileError):
        ControlNetGenerator(tmp_path, "mask")


@pytest.mark.slow
def test_controlnet_backend_runs_a_tiny_random_pipeline_end_to_end(tmp_path):
    pytest.importorskip("transformers")
    from tests.tiny_controlnet import build_tiny_controlnet

    w = build_tiny_controlnet(tmp_path / "w", conditions=("seg",))
    assert controlnet_missing(w, "mask") is None and "sd-controlnet-hed" in controlnet_missing(w, "hed")
    ds = toy.ToyDataset(size=40)
    specs = sample_episodes(ds, 0, 1, 2, 0).episodes
    cfg = {**DEFAULTS, "backend": "controlnet", "condition": "mask", "aux_shots": 2, "steps": 2, "size": 64}
    sup = AuxSupplier(cfg, ds, AuxCache(tmp_path / "c"), weights_dir=w, device="cpu")
    made = sup.generate(specs)
    assert made == 2 * len({(s.supports[0], s.support_class_id) for s in specs})
    raw = load_raw_episode(ds, specs[0], 0, "mask")
    ext = sup.extend(raw)
    assert ext.shot == 3 and all(s.image.shape == raw.shots[0].image.shape for s in ext.shots)
    assert not np.array_equal(ext.shots[1].image, ext.shots[2].image)  # two seeds, two images
    ident = sup.generator.identity()
    assert len(ident["weights_sha256"]) == 64 and ident["guidance"] == 9.0 and ident["scheduler"] == "ddim"
    assert "a real shot photo of" in ident["prompt"] and ident["negative_prompt"].endswith("artwork")
    again = AuxSupplier(cfg, ds, AuxCache(tmp_path / "c"), weights_dir=w, device="cpu")
    assert again.generate(specs) == 0  # cached under the weights' hash


# --- suite end to end ----------------------------------------------------------------------------------
def _suite(tmp_path: Path, aux: str, extra: str = "", methods: str = "[prototype]", file: str = "ax.yaml") -> Path:
    root = tmp_path / "toyroot"
    root.mkdir(exist_ok=True)
    text = f"""
    name: ax
    matrix:
      methods: {methods}
      backbones: [toy-s]
      folds: [0]
      shots: [1]
      kinds: [mask]
      aux: {aux}
    dataset: {{name: toy, root: {root}}}
    protocol: {{name: hsnet, img_size: 32}}
    episodes: 8
    train: {{epochs: 1, episodes_per_epoch: 4, batch_size: 4, val_episodes: 4}}
    eval: {{batch_size: 4, device: cpu, artefacts: 2}}
    aux: {{backend: offline, aux_shots: 2{extra}}}
    """
    path = tmp_path / file
    path.write_text(textwrap.dedent(text))
    return path


def test_suite_with_aux_runs_and_reports(tmp_path, capsys):
    from fssbench.cli import main

    methods = "[prototype, {name: diffup, options: {width: 4, prior_size: 16, timesteps: 20, sampling_steps: 2, ensemble: 1, augment: 1}}]"
    path = _suite(tmp_path, "[none, mask, hed]", methods=methods)
    from fssbench.suite import load_suite

    suite = load_suite(path)
    runs = suite.expand()
    assert len(runs) == 6 and len({r.decoder_id for r in runs if r.decoder_id}) == 1  # aux never re-trains
    plain = [r for r in runs if r.config.aux is None]
    # runs without auxiliary supports keep the ids they have in a suite without any
    assert {r.run_id for r in plain} == {r.run_id for r in load_suite(_suite(tmp_path, "[none]", methods=methods, file="b.yaml")).expand()}
    assert sorted(r.config.aux["condition"] for r in runs if r.config.aux) == ["hed", "hed", "mask", "mask"]
    res = tmp_path / "res"
    main(["run", str(path), "--results-dir", str(res)])
    out = capsys.readouterr().out
    assert "offline stand-in, not a diffusion model" in out
    recs = [json.loads(p.read_text()) for p in res.glob("*.json")]
    with_aux = [r for r in recs if r["config"].get("aux")]
    assert len(with_aux) == 4 and all(r["metrics"]["aux"]["fallbacks"] == 0 and r["metrics"]["aux"]["stand_in"] for r in with_aux)
    rep = tmp_path / "rep"
    main(["report", str(res), "--out", str(rep)])
    md = (rep / "auxiliary.md").read_text()
    assert "stand-in for the diffusion model, NOT one" in md and "+ mask" in md and "+ hed" in md
    assert (rep / "fig_aux_panel.png").is_file() and (rep / "fig_aux_panel.pdf").is_file()
    assert "auxiliary.md" in (rep / "index.md").read_text()
    # a second run: nothing generated, nothing evaluated
    main(["run", str(path), "--results-dir", str(res)])
    assert "generated" not in capsys.readouterr().out
    # sharded evaluation gives the same records and the same aux summary (fallbacks summed over parts)
    sharded = _suite(tmp_path, "[none, mask, hed]", methods=methods, file="sh.yaml")
    sharded.write_text(sharded.read_text().replace("artefacts: 2}", "artefacts: 2, shards: 3}"))
    main(["run", str(sharded), "--results-dir", str(tmp_path / "res3")])
    for r in recs:
        b = json.loads((tmp_path / "res3" / f"{r['run_id']}.json").read_text())
        assert b["episodes"] == r["episodes"] and b["metrics"] == r["metrics"]


@pytest.mark.parametrize("aux,extra,match", [
    ("[depth]", "", "matrix.aux"),
    ("[mask]", ", aux_shots: 0", "aux.aux_shots"),
    ("[mask]", ", backend: gan", "aux.backend"),
    ("[mask]", ", colour: 3", "aux.colour"),
    ("[mask]", ", backend: pregenerated", "aux.dir"),
    ("[mask]", ", backend: controlnet", "aux backend controlnet"),
])
def test_bad_aux_settings_are_one_line_each(tmp_path, aux, extra, match, monkeypatch):
    from fssbench.suite import SuiteError, load_suite

    monkeypatch.delenv("FSSBENCH_WEIGHTS", raising=False)
    with pytest.raises(SuiteError, match=match) as err:
        load_suite(_suite(tmp_path, aux, extra))
    assert all(len(p.splitlines()) == 1 for p in err.value.problems)
