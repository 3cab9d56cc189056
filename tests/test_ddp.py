"""Multi-process data parallel training through torchrun, two CPU processes on gloo."""

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def test_torchrun_two_cpu_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "scripts" / "ddp_train.py"), str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.nn.Conv2d(2, 2, 3, padding=1)
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "DDP ranks diverged"
    assert (tmp_path / "best.pt").exists() and (tmp_path / "last.pt").exists()
    assert len((tmp_path / "log.csv").read_text().strip().splitlines()) == 3
    assert r0["head.weight"].shape == init.weight.shape
