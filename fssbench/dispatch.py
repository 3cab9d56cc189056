"""Pin the CPU kernel dispatch, so a CPU run gives the same bits on every x86-64 machine with AVX2.

Why: PyTorch's CPU libraries each pick their kernels from the instruction set of the machine they
run on: ATen's vectorised kernels (``ATEN_CPU_CAPABILITY``), oneDNN's convolutions
(``ONEDNN_MAX_CPU_ISA``) and MKL's BLAS (``MKL_CBWR``, its conditional numerical reproducibility
mode). A wider vector unit sums in another order, so a *trained* method drifts by float rounding
from an AVX2 machine to an AVX-512 one (the committed gates moved by up to 0.9 mIoU on an AVX-512
machine; prototype cells, which train nothing, did not move). Pinning all three to AVX2 makes every
AVX2-or-better machine run the same kernels. Each library reads its variable once, at its first
use, so ``pin_cpu_dispatch`` runs when ``fssbench`` is imported, before any tensor work.

``FSSBENCH_CPU_DISPATCH=native`` opts out (each library picks for itself, as plain PyTorch does);
what a run actually used is recorded with its result (``dispatch_provenance``) so that ``regress``
can say when a baseline was made under another dispatch.

Measured on a 2-core AMD EPYC (AVX2) with HSNet training steps: each library changes the trained
weights when its level is lowered (ATen ``default``, oneDNN ``SSE41``, MKL ``COMPATIBLE``), and
the pinned setting gives the same weights as that machine's native dispatch, so numbers made
there before the pin still hold. See the README's "Reproducibility" section.
"""

from __future__ import annotations

import os
import platform
from typing import Any

OPT_OUT = "FSSBENCH_CPU_DISPATCH"
"""Environment variable: ``native`` leaves the dispatch to each library; unset or ``avx2`` pins."""

X86_PIN: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
}
"""The pinned level for each library on x86-64 (STRICT: MKL's results independent of alignment too)."""

_X86 = {"x86_64", "amd64", "i686", "x86"}


def pin_requested() -> bool:
    """Whether this process should pin: on x86-64 unless the user opted out."""
    if platform.machine().lower() not in _X86:
        return False
    mode = os.environ.get(OPT_OUT, "avx2").strip().lower()
    if mode not in ("avx2", "native"):
        # Import time: a UserError here would be a traceback in every command, so fall back to the
        # pin (the safe choice for reproducibility) and let `dispatch_provenance` record the value.
        return True
    return mode == "avx2"


def pin_cpu_dispatch(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the pinned variables in ``environ`` (default ``os.environ``), overriding ambient values.

    Ambient values are overridden on purpose: a shell that exported ``ATEN_CPU_CAPABILITY=default``
    for another program would otherwise silently change fssbench's numbers. Returns what was set.
    """
    env = os.environ if environ is None else environ
    if not pin_requested():
        return {}
    env.update(X86_PIN)
    return dict(X86_PIN)


def dispatch_provenance() -> dict[str, Any]:
    """What this process's CPU kernels were dispatched to: recorded with every result and baseline."""
    import torch

    out: dict[str, Any] = {
        "cpu_dispatch": "pinned" if pin_requested() else "native",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
    }
    for key in X86_PIN:
        out[key] = os.environ.get(key)
    return out


DEVICE_ENV = "FSSBENCH_DEVICE"
"""Environment variable: what ``auto`` means (``cpu``, ``cuda`` or ``cuda:N``). The tests and the
CI gates set ``cpu``: their baselines were made on CPUs, and a GPU run would be compared with them
in another precision (bf16 autocast) without a word."""


def auto_device() -> str:
    """The device ``auto`` stands for: ``$FSSBENCH_DEVICE`` when set, else CUDA when visible, else the CPU."""
    import torch

    pinned = os.environ.get(DEVICE_ENV, "").strip()
    if pinned and pinned != "auto":
        return pinned
    return "cuda" if torch.cuda.is_available() else "cpu"
