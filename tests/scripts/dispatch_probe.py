"""A short HSNet training (zoo-rn-s, 64 px, fixed inputs, one thread); prints the trained weights'
sha256 and the ATen capability. Run as a subprocess by tests/test_dispatch.py, so each run starts
with its own environment (each CPU library reads its dispatch variable once, at first use)."""

from __future__ import annotations

import hashlib
import json

import fssbench  # noqa: F401  (first: pins the dispatch unless FSSBENCH_CPU_DISPATCH=native)
import torch
import torch.nn.functional as F

import methods  # noqa: F401  (registers the shipped methods)
from fssbench.backbones import create_backbone
from fssbench.methods import create_method


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_method("hsnet", create_backbone("zoo-rn-s"))
    g = torch.Generator().manual_seed(1)
    query, support = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    support_mask = (torch.rand(2, 64, 64, generator=g) > 0.7).float()
    target = (torch.rand(2, 64, 64, generator=g) > 0.7).long()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        loss = F.cross_entropy(model(query, support, support_mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    print(json.dumps({"sha256": digest.hexdigest(), "capability": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main()
