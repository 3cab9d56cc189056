"""fssbench: a benchmark and ablation suite for few-shot semantic segmentation."""

__version__ = "0.1.0"
