"""fssbench: a benchmark and ablation suite for few-shot semantic segmentation."""

from fssbench.dispatch import pin_cpu_dispatch

# Before any tensor work: each CPU library reads its dispatch variable once, at first use.
pin_cpu_dispatch()

__version__ = "0.1.0"
