"""Suites: a YAML matrix of methods x backbones x folds x shots x kinds x seeds, plus a protocol.

One job per module: ``schema`` (the dataclasses, and parsing a suite document into them),
``checks`` (what the names refer to: the registries and files), ``expand`` (the matrix as runs
with stable ids), ``load`` (the file, its profile, and the three in order).
"""

from fssbench.suite.expand import expand_suite, seed_tag
from fssbench.suite.load import load_suite
from fssbench.suite.schema import (
    BACKBONE_VARIANTS,
    BackbonePair,
    MethodEntry,
    Run,
    RunConfig,
    Suite,
    SuiteError,
    canonical_hash,
    split_backbone,
)

__all__ = [
    "BACKBONE_VARIANTS",
    "BackbonePair",
    "MethodEntry",
    "Run",
    "RunConfig",
    "Suite",
    "SuiteError",
    "canonical_hash",
    "expand_suite",
    "load_suite",
    "seed_tag",
    "split_backbone",
]
