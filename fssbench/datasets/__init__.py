"""Datasets in their official on-disk layouts. Importing this package registers them."""

from fssbench.datasets.base import (
    IGNORE_INDEX,
    SPLITS,
    Entry,
    FSSDataset,
    dataset_names,
    get_dataset,
    is_dataset_name,
    register_dataset,
)

from fssbench.datasets import pascal as _pascal  # noqa: F401,E402  (registers "pascal")
from fssbench.datasets import coco as _coco  # noqa: F401,E402  (registers "coco")
from fssbench.datasets import fss as _fss  # noqa: F401,E402  (registers "fss")

__all__ = ["IGNORE_INDEX", "SPLITS", "Entry", "FSSDataset", "dataset_names", "get_dataset", "is_dataset_name", "register_dataset"]
