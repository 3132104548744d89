"""Reading nested YAML mappings key by key, recording every problem with its key path (for :class:`ConfigError`)."""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from dataclasses import MISSING, Field, field, fields
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class KeyReader:
    """Pops keys from mappings, checks their types and rules, and records every problem with its key path."""

    def __init__(self, file: str, known: dict[str, tuple[str, ...]] | None = None):
        self.file = file
        self.known = known or {}  # section -> its keys, to suggest the closest one for an unknown key
        self.problems: list[tuple[str, str]] = []

    def bad(self, key: str, msg: str) -> None:
        self.problems.append((printable(key), printable(msg)))  # a key with a newline must not break the line

    def section(self, parent: dict, key: str) -> dict:
        raw = parent if key == "" else parent.pop(key, None)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.bad(key, f"must be a mapping of keys, got {show(raw)}")
            return {}
        return dict(raw)

    def take(
        self,
        d: dict,
        key: str,
        kind: type,
        default: Any = None,
        *,
        required: bool = False,
        choices: tuple[str, ...] | None = None,
        check=None,
        rule: str = "",
        at: str = "",
        nullable: bool = False,
    ) -> Any:
        path = f"{at}.{key}" if at else key
        if key not in d or (d[key] is None and not nullable):
            d.pop(key, None)
            if required:
                self.bad(path, f"missing ({expect(kind, choices)} expected)")
            return default
        v = d.pop(key)
        if v is None:
            return None
        if kind is float and is_number(v):
            v = to_float(v)
        elif kind is str and is_number(v) and choices is None:
            v = str(v)
        elif not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            self.bad(path, f"must be {expect(kind, choices)}, got {show(v)}")
            return default
        if (why := unusable(v)) is not None:
            self.bad(path, why)
            return default
        if choices is not None and v not in choices:
            self.bad(path, f"must be one of {', '.join(choices)}, got {show(v)}")
            return default
        if check is not None and not check(v):
            self.bad(path, f"must be {rule}, got {show(v)}")
            return default
        return v

    def take_list(self, d: dict, key: str, kind: type, default: tuple, *, at: str = "") -> tuple:
        path = f"{at}.{key}" if at else key
        raw = d.pop(key, None)
        if raw is None:
            return default
        if not isinstance(raw, list):
            raw = [raw] if (kind is float and is_number(raw)) or isinstance(raw, kind) else raw
        if not isinstance(raw, list):
            self.bad(path, f"must be a list of {expect(kind, None)}s, got {show(raw)}")
            return default
        out = []
        for i, v in enumerate(raw):
            if kind is float and is_number(v):
                v = to_float(v)
            elif not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
                self.bad(f"{path}[{i}]", f"must be {expect(kind, None)}, got {show(v)}")
                continue
            if (why := unusable(v)) is not None:
                self.bad(f"{path}[{i}]", why)
            else:
                out.append(v)
        return tuple(out)

    def done(self, d: dict, at: str) -> None:
        """Whatever is left in ``d`` was not expected: report each key (with the closest known one)."""
        for key in d:
            self.bad(f"{at}.{key}" if at else str(key), f"unknown key{close_match(str(key), self.known.get(at, ()))}")


def ordered(r: KeyReader, path: str, lo: Any, hi: Any) -> bool:
    """``min <= max``, or a problem on ``path`` (the one place this rule is written)."""
    if lo > hi:
        r.bad(path, f"min <= max must hold, got min={show(lo)} max={show(hi)}")
        return False
    return True


def setting(default: Any, kind: type, *, many: bool = False, **rules: Any) -> Any:
    """A dataclass field read from a study file by :func:`read_fields`: its default stated here, once.

    ``rules`` are :meth:`KeyReader.take`'s (``choices``, ``check`` + ``rule``, ``required``, ``nullable``).
    """
    return field(default=default, metadata={"setting": (kind, many, rules)})


def section_field(default: Any = MISSING, *, default_factory: Any = MISSING) -> Any:
    """A dataclass field that is a section (or a key with its own syntax) read by hand: a known key all the same."""
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata={"section": True})
    return field(default=default, metadata={"section": True})


def read_fields(r: KeyReader, d: dict, cls: type, at: str = "", /, **defaults: Any) -> dict[str, Any]:
    """Every :func:`setting` of ``cls`` popped from ``d``; ``defaults`` replace a field's own where it depends on
    the rest of the file (the sampler's seed is the study's)."""
    out = {}
    for f in fields(cls):
        if "setting" not in f.metadata:
            continue
        kind, many, rules = f.metadata["setting"]
        default = defaults.get(f.name, _default(f))
        if many:
            out[f.name] = r.take_list(d, f.name, kind, default, at=at)
        else:
            out[f.name] = r.take(d, f.name, kind, default, at=at, **rules)
    return out


def known_keys(cls: type) -> tuple[str, ...]:
    """The keys a section accepts: its settings and hand-read fields (unknown keys are matched against these)."""
    return tuple(f.name for f in fields(cls) if "setting" in f.metadata or "section" in f.metadata)


def _default(f: Field) -> Any:
    return f.default if f.default is not MISSING else None


def close_match(key: str, known) -> str:
    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def expect(kind: type, choices: tuple[str, ...] | None) -> str:
    if choices:
        return "one of " + ", ".join(choices)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, kind.__name__)


def show(v: Any) -> str:
    """A value as a message quotes it: on one line and short, however large or hostile the value."""
    if isinstance(v, str):
        return repr(v) if len(v) <= 80 else repr(v[:60]) + f"... ({len(v)} characters)"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int) and abs(v) >= 10**15:
        digits = len(str(abs(v)))
        return f"{'-' if v < 0 else ''}{str(abs(v))[:4]}...e+{digits - 1} ({digits} digits)"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "nothing"
    return f"a {type(v).__name__} {_SHORT.repr(v)}"[:80]


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 6, 6, 40


def to_float(v: int | float) -> float:
    """``float(v)``, with an integer too large for a float as infinity (refused as not finite, not a traceback)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def unusable(v: Any) -> str | None:
    """Why a number or string read from a file cannot be used anywhere (None when it can)."""
    if isinstance(v, float) and not math.isfinite(v):
        return f"must be a finite number, got {show(v)}"
    if isinstance(v, str) and _CONTROL.search(v):
        return f"must not contain control characters (a newline, a tab, ...), got {show(v)}"
    return None


def printable(s: str) -> str:
    """``s`` with its control characters escaped as Python writes them (``\\n``): a message stays one line."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], s)


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
