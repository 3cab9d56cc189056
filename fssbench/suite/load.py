"""Loading a suite: read the YAML, merge the chosen profile, parse (``fssbench.suite.schema``),
check (``fssbench.suite.checks``) and expand the matrix (``fssbench.suite.expand``).

A suite file is data (``yaml.safe_load``). Profiles (e.g. ``quick`` on the embedded world,
``paper`` on PASCAL-5i) are deep-merged over the suite's base settings (mappings merge, lists
replace), so one matrix serves both. ``load_suite`` checks everything it can *before* any work
starts and reports every problem on its own line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from fssbench.errors import UserError
from fssbench.suite.checks import check_registries
from fssbench.suite.expand import expand_suite
from fssbench.suite.schema import TOP_KEYS, Suite, SuiteError, parse_suite


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_suite(
    path: str | Path, profile: str | None = None, *, check_data: bool = True, weights_dir: str | Path | None = None
) -> Suite:
    """Parse, merge the profile, and validate a suite; raises ``SuiteError`` listing every problem.

    With ``check_data`` the data root and every backbone's weights file (looked up in
    ``weights_dir``, ``$FSSBENCH_WEIGHTS`` and the library caches) must be there: a paper profile
    without them fails here, before any work, naming each missing file and where it goes."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"suite file '{path}' is a folder, not a file; pass a YAML file such as suites/smoke.yaml")
    if not path.is_file():
        raise UserError(f"suite file '{path}' not found; pass a YAML file such as suites/smoke.yaml")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"suite file '{path}' is not valid YAML{where}; fix the syntax") from None
    if not isinstance(doc, dict):
        raise UserError(f"suite file '{path}' must be a mapping with keys such as name, matrix, dataset")
    problems: list[str] = []
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, dict):
        problems.append("'profiles' must be a mapping of profile name -> settings")
        profiles = {}
    chosen = profile or doc.get("default_profile")
    if chosen is not None:
        if chosen not in profiles:
            raise SuiteError(str(path), [f"unknown profile '{chosen}'; profiles: {', '.join(profiles) or 'none'}"])
        over = profiles[chosen] or {}
        if not isinstance(over, dict):
            raise SuiteError(str(path), [f"profile '{chosen}' must be a mapping"])
        bad = sorted(set(over) - (TOP_KEYS - {"profiles", "default_profile", "name"}))
        if bad:
            problems.append(f"profile '{chosen}' has unknown key(s) {', '.join(bad)}")
        doc = deep_merge({k: v for k, v in doc.items() if k not in ("profiles",)}, over)

    suite = parse_suite(doc, path, chosen, problems)
    if not problems:
        check_registries(suite, problems, check_data=check_data, weights_dir=weights_dir)
    if problems:
        raise SuiteError(str(path), problems)
    suite.runs = tuple(expand_suite(suite))
    return suite


__all__ = ["deep_merge", "load_suite"]
