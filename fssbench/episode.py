"""The episode: the one structure every method consumes.

Three stages, each with one obvious home:

* ``EpisodeSpec`` -- what an episode *is*: class, query name, support names. Frozen, hashable,
  serialisable; a list of them is what ``fssbench episodes export`` writes.
* ``RawEpisode`` -- the spec loaded from disk at original resolution (numpy), with the support
  annotation of the requested kind already derived from the masks.
* ``Episode`` -- a ``RawEpisode`` after a protocol's resize (torch tensors, images in [0, 1]).
  ``collate`` stacks episodes of one shape into an ``EpisodeBatch`` for batched methods.

Support annotations never include the true support mask unless the kind is ``mask``: a method
sees exactly what a user with that kind of annotation would give it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

ANNOTATION_KINDS: tuple[str, ...] = ("mask", "bbox", "scribble", "image", "text")
"""Support annotation kinds. ``image``: support image, no mask. ``text``: class-name prompt."""

PROMPT_TEMPLATE = "a photo of a {}"
"""The text prompt of the DiffUp / IMR-HSNet line."""


def prompt_for(class_name: str) -> str:
    """The text annotation for a class (``a photo of a {class}``)."""
    return PROMPT_TEMPLATE.format(class_name)


@dataclass(frozen=True)
class EpisodeSpec:
    """One frozen episode: enough to rebuild it from the dataset, nothing more."""

    episode_id: int
    class_id: int
    query: str
    supports: tuple[str, ...]
    support_class: int | None = None
    """The class annotated on the supports when it is not ``class_id`` (the support-reliance control)."""

    @property
    def support_class_id(self) -> int:
        return self.class_id if self.support_class is None else self.support_class

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "episode_id": self.episode_id,
            "class_id": self.class_id,
            "query": self.query,
            "supports": list(self.supports),
        }
        if self.support_class is not None:
            d["support_class"] = self.support_class
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EpisodeSpec":
        sc = d.get("support_class")
        return cls(
            int(d["episode_id"]), int(d["class_id"]), str(d["query"]), tuple(map(str, d["supports"])),
            None if sc is None else int(sc),
        )


def hash_specs(specs: Sequence[EpisodeSpec], header: dict[str, Any] | None = None) -> str:
    """Content hash of an episode list (and the header fields that change its meaning)."""
    payload = {"header": header or {}, "episodes": [s.to_dict() for s in specs]}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass
class SupportAnnotation:
    """What the user annotated on one support image, at that image's resolution.

    ``fg``: pixels given as foreground (the mask, the filled boxes, the foreground scribble).
    ``bg``: pixels given as background (outside the mask/boxes; the background scribble).
    Both are ``uint8`` {0, 1} arrays, ``None`` for ``image`` and ``text``. ``ignore`` marks
    pixels that carry no label (PASCAL's 255 boundary), never part of ``fg`` or ``bg``.
    """

    kind: str
    fg: np.ndarray | None
    bg: np.ndarray | None
    ignore: np.ndarray


@dataclass
class RawShot:
    name: str
    image: np.ndarray  # H x W x 3 uint8 RGB
    annotation: SupportAnnotation


@dataclass
class RawEpisode:
    """An episode loaded at original resolution (numpy)."""

    spec: EpisodeSpec
    fold: int
    class_name: str
    kind: str
    query_image: np.ndarray  # H x W x 3 uint8 RGB
    query_mask: np.ndarray  # H x W uint8 {0, 1}
    query_ignore: np.ndarray  # H x W bool
    shots: list[RawShot] = field(default_factory=list)
    support_class_name: str | None = None  # set when the supports show another class (control)

    @property
    def prompt(self) -> str:
        return prompt_for(self.support_class_name or self.class_name)

    @property
    def shot(self) -> int:
        return len(self.shots)


@dataclass
class Episode:
    """An episode at a protocol's input resolution, as methods consume it (no batch dim).

    Images are float32 in [0, 1], RGB, ``[3, H, W]``; a backbone applies its own normalisation.
    ``support_fg`` / ``support_bg`` are float32 {0, 1} ``[K, H, W]`` (``None`` for kinds
    ``image`` and ``text``). ``query_mask`` / ``query_ignore`` are the label at input
    resolution (for training and ``hsnet`` scoring); ``label_original`` / ``ignore_original``
    keep the untouched label so a protocol can score at original size. ``geometry`` records
    the resize/pad so a prediction can be mapped back.
    """

    spec: EpisodeSpec
    fold: int
    class_name: str
    kind: str
    query_image: torch.Tensor
    query_mask: torch.Tensor
    query_ignore: torch.Tensor
    support_images: torch.Tensor  # [K, 3, H, W]
    support_fg: torch.Tensor | None
    support_bg: torch.Tensor | None
    support_ignore: torch.Tensor  # [K, H, W] bool
    support_names: tuple[str, ...]
    label_original: np.ndarray
    ignore_original: np.ndarray
    geometry: dict[str, Any]
    support_class_name: str | None = None

    @property
    def prompt(self) -> str:
        return prompt_for(self.support_class_name or self.class_name)

    @property
    def shot(self) -> int:
        return int(self.support_images.shape[0])


@dataclass
class EpisodeBatch:
    """``B`` episodes of one shape, stacked along a leading batch dimension."""

    episodes: list[Episode]
    query_image: torch.Tensor  # [B, 3, H, W]
    query_mask: torch.Tensor  # [B, H, W]
    query_ignore: torch.Tensor  # [B, H, W]
    support_images: torch.Tensor  # [B, K, 3, H, W]
    support_fg: torch.Tensor | None  # [B, K, H, W]
    support_bg: torch.Tensor | None
    support_ignore: torch.Tensor  # [B, K, H, W]
    class_ids: torch.Tensor  # [B]
    prompts: list[str]
    kind: str
    generators: list[torch.Generator] | None = None
    """One CPU generator per episode, seeded from (sampling seed, episode id) by the evaluation
    engine; ``None`` during training (training noise comes from the torch RNG seeded by the run)."""

    def __len__(self) -> int:
        return len(self.episodes)

    def randn(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Noise ``[B, *shape]`` on the batch's device: episode ``i``'s slice comes from its own generator.

        Drawn on the CPU and moved, so a prediction never depends on batch size, batch
        composition, run order or the device. Without generators (training) it is ``torch.randn``.
        """
        device = self.query_image.device
        if self.generators is None:
            return torch.randn(len(self), *shape, dtype=dtype, device=device)
        if len(self.generators) != len(self):
            raise ValueError(f"{len(self.generators)} generators for {len(self)} episodes")
        noise = torch.stack([torch.randn(*shape, generator=g, dtype=torch.float32) for g in self.generators])
        return noise.to(device=device, dtype=dtype)

    def rand(self, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniform [0, 1) noise ``[B, *shape]``, per-episode generators as :meth:`randn`."""
        device = self.query_image.device
        if self.generators is None:
            return torch.rand(len(self), *shape, dtype=dtype, device=device)
        noise = torch.stack([torch.rand(*shape, generator=g, dtype=torch.float32) for g in self.generators])
        return noise.to(device=device, dtype=dtype)

    @property
    def shot(self) -> int:
        return int(self.support_images.shape[1])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "EpisodeBatch":
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else fn(t)

        return EpisodeBatch(
            episodes=self.episodes,
            query_image=mv(self.query_image),
            query_mask=mv(self.query_mask),
            query_ignore=mv(self.query_ignore),
            support_images=mv(self.support_images),
            support_fg=mv(self.support_fg),
            support_bg=mv(self.support_bg),
            support_ignore=mv(self.support_ignore),
            class_ids=mv(self.class_ids),
            prompts=self.prompts,
            kind=self.kind,
            generators=self.generators,
        )

    def to(self, device: torch.device | str, non_blocking: bool = True) -> "EpisodeBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "EpisodeBatch":
        """Page-locked copies, so that ``to("cuda", non_blocking=True)`` overlaps with compute."""
        return self._map(lambda t: t.pin_memory())


def episode_generator(sampling_seed: int, episode_id: int) -> torch.Generator:
    """The generator of one episode's evaluation-time noise: a function of (sampling seed, episode id) only."""
    import numpy as np

    seed = int(np.random.SeedSequence([int(sampling_seed), int(episode_id)]).generate_state(2, dtype=np.uint32).view(np.uint64)[0])
    return torch.Generator().manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)


def collate(episodes: Sequence[Episode], sampling_seed: int | None = None) -> EpisodeBatch:
    """Stack episodes that share kind, shot and input size; with ``sampling_seed``, attach one
    noise generator per episode (:func:`episode_generator`)."""
    if not episodes:
        raise ValueError("collate needs at least one episode")
    kinds = {e.kind for e in episodes}
    shots = {e.shot for e in episodes}
    sizes = {tuple(e.query_image.shape) for e in episodes}
    if len(kinds) > 1 or len(shots) > 1 or len(sizes) > 1:
        raise ValueError(f"cannot batch episodes of mixed kind/shot/size: {kinds}, {shots}, {sizes}")

    def stack(name: str) -> torch.Tensor | None:
        vals = [getattr(e, name) for e in episodes]
        return None if vals[0] is None else torch.stack(vals)

    return EpisodeBatch(
        episodes=list(episodes),
        query_image=stack("query_image"),
        query_mask=stack("query_mask"),
        query_ignore=stack("query_ignore"),
        support_images=stack("support_images"),
        support_fg=stack("support_fg"),
        support_bg=stack("support_bg"),
        support_ignore=stack("support_ignore"),
        class_ids=torch.tensor([e.spec.class_id for e in episodes], dtype=torch.long),
        prompts=[e.prompt for e in episodes],
        kind=episodes[0].kind,
        generators=None if sampling_seed is None else [episode_generator(sampling_seed, e.spec.episode_id) for e in episodes],
    )

