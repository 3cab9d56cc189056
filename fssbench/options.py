"""Method options as data: each option's default, type and allowed values in one declaration.

A method declares ``option_specs = {"ensemble": Option(4, int, ge=1), ...}``; the harness derives
the method's defaults from it and checks a suite's ``options:`` against it when the suite loads, so
a bad value is one line before any data or backbone is built, not an error deep inside a
constructor. Rules that relate several options (or that no field below can say) go in the method's
``check_options`` hook; rules that need the backbone (layer names exist, a text tower) stay in the
constructor.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

TYPE_NAMES: dict[type, str] = {
    bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list", type(None): "null",
}
_PLURALS: dict[type, str] = {bool: "booleans", int: "integers", float: "numbers", str: "strings", list: "lists"}


def type_ok(value: Any, want: type) -> bool:
    """YAML-minded type test: ``true`` is not an integer, an integer is a number, a tuple is a list."""
    if want is bool:
        return isinstance(value, bool)
    if want is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if want is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want is list:
        return isinstance(value, (list, tuple))
    return isinstance(value, want)


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Option:
    """One method option.

    ``type``: the allowed type(s) (``float`` accepts integers, ``bool`` never counts as a number).
    ``choices``: the allowed values of a scalar (a string such as ``"auto"``); a list value is
    checked item by item against ``items`` (itself an ``Option``, whose default is unused) and
    ``min_len`` / ``distinct``. ``ge`` / ``gt`` / ``le`` / ``multiple_of`` bound numbers. ``check``
    is a further rule no field says (a grammar such as ``l2:exp``): it returns ``None`` for a good
    value, else what is allowed. ``help`` is one line for people reading the declaration.
    """

    default: Any
    type: type | tuple[type, ...]
    help: str = ""
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    multiple_of: int | None = None
    items: "Option | None" = None
    min_len: int = 0
    distinct: bool = False
    check: Callable[[Any], str | None] | None = None

    @property
    def types(self) -> tuple[type, ...]:
        return self.type if isinstance(self.type, tuple) else (self.type,)

    def _range(self) -> str:
        if self.ge is not None and self.le is not None:
            bounds = [f"{_num(self.ge)}..{_num(self.le)}"]
        else:
            bounds = [f"{op} {_num(x)}" for op, x in ((">=", self.ge), (">", self.gt), ("<=", self.le)) if x is not None]
        if self.multiple_of:
            bounds.append(f"a multiple of {self.multiple_of}")
        return " and ".join(bounds)

    def allowed(self) -> str:
        """What this option accepts, in words (``an integer >= 1``, ``one of stage, depth``)."""
        parts = []
        for t in self.types:
            if t is list:
                of = ""
                if self.items is not None:
                    it = self.items
                    kinds = " or ".join(_PLURALS.get(x, x.__name__) for x in it.types)
                    of = f" of {'distinct ' if self.distinct else ''}{kinds}" if not it.choices else (
                        f" of {'distinct ' if self.distinct else ''}names from {', '.join(map(str, it.choices))}"
                    )
                parts.append(f"a{' non-empty' if self.min_len else ''} list{of}")
            elif self.choices is not None:
                choice = f"one of {', '.join(map(str, self.choices))}" if len(self.choices) > 1 else str(self.choices[0])
                parts += [choice] if choice not in parts else []
            else:
                rng = self._range() if t in (int, float) else ""
                parts.append(TYPE_NAMES.get(t, t.__name__) + (f" {rng}" if rng else ""))
        return " or ".join(parts)

    def problem(self, value: Any) -> str | None:
        """``None`` when ``value`` is allowed, else what is allowed (for a one-line message)."""
        t = next((t for t in self.types if type_ok(value, t)), None)
        if t is None:
            return self.allowed()
        if t is list:
            if len(value) < self.min_len or (self.distinct and len(set(map(repr, value))) != len(value)):
                return self.allowed()
            if self.items is not None:
                bad = next((p for p in map(self.items.problem, value) if p is not None), None)
                if bad is not None:
                    return self.allowed() + (f", each {bad}" if bad != self.items.allowed() else "")
        elif self.choices is not None:
            if value not in self.choices:
                return self.allowed()
        elif t in (int, float):
            if (
                (self.ge is not None and value < self.ge)
                or (self.gt is not None and value <= self.gt)
                or (self.le is not None and value > self.le)
                or (self.multiple_of and value % self.multiple_of)
            ):
                return self.allowed()
        return self.check(value) if self.check is not None else None


def defaults(specs: Mapping[str, Option]) -> dict[str, Any]:
    """The default of every declared option (a method's ``default_config``)."""
    return {k: spec.default for k, spec in specs.items()}


def unknown_problem(who: str, options: Mapping[str, Any], known: Mapping[str, Any]) -> str | None:
    """One line for option names ``known`` lacks, with the closest known name when there is one."""
    bad = sorted(set(options) - set(known))
    if not bad:
        return None
    close = [m for b in bad for m in difflib.get_close_matches(b, list(known), n=1)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"{who} has no option(s) {', '.join(bad)} (valid: {', '.join(sorted(known)) or 'none'}){hint}"


def value_problems(who: str, options: Mapping[str, Any], specs: Mapping[str, Option]) -> list[str]:
    """One line per declared option whose value is not allowed: the option, the value, what is allowed."""
    out = []
    for k, v in options.items():
        spec = specs.get(k)
        why = spec.problem(v) if spec is not None else None
        if why is not None:
            out.append(f"{who} option {k} must be {why}, got {v!r}")
    return out
