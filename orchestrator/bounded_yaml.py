"""YAML files read with limits, so that a hostile or careless file is refused in a fraction of a second.

Plain ``yaml.safe_load`` accepts duplicate keys (the last one silently wins), and a small file can still
cost minutes: an alias bomb expands to billions of values for whoever walks it, 10,000 nested ``[`` end in a
RecursionError, a megabyte list of names takes seconds in PyYAML's pure-Python parser. Here the file is
first streamed through libyaml's event parser (C speed) counting size, depth and values-after-alias-expansion,
and only a file within the limits is built into Python objects. A leaf module (imports only yaml), so
``yolo/`` may use it as it uses ``errors``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a study file is a few KiB; a data yaml with 10,000 class names ~200 KiB
MAX_VALUES = 100_000  # scalars and collections, counted as if every alias were written out (~0.2 s to parse)
MAX_DEPTH = 64  # nesting of lists and mappings (study files use 3)

_CParser = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when the wheel has it (PyPI's do)


class YamlRefused(Exception):
    """A YAML text that cannot be used; the message starts with the line where it breaks (``line 3: ...``)."""


def read_yaml(path: Path) -> Any:
    """Parse a YAML file within the limits above; raises YamlRefused with a one-line reason."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise YamlRefused(f"{size:,} bytes, more than the {MAX_BYTES:,} a YAML file may have here")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlRefused(f"not UTF-8 text (byte {e.start})") from None
    return load_yaml(text)


def load_yaml(text: str) -> Any:
    """Parse YAML text: duplicate keys, too many values (aliases expanded) and deep nesting are refused."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise YamlRefused(f"more than the {MAX_BYTES:,} bytes a YAML file may have here")
    try:
        _check_events(text)
        return yaml.load(text, Loader=_NoDuplicateKeys)  # noqa: S506 (a SafeLoader)
    except YamlRefused:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise YamlRefused(f"{where}not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except ValueError as e:  # an integer of more than 4300 digits (Python's limit on int(str))
        raise YamlRefused(f"not valid YAML ({str(e).splitlines()[0][:100]})") from None
    except RecursionError:  # MAX_DEPTH stops this first; kept so that no input ends in a traceback
        raise YamlRefused(f"nested more than {MAX_DEPTH} levels deep") from None


def _check_events(text: str) -> None:
    """Walk the parser's events (nothing is built): count values with aliases expanded, and nesting."""
    open_sizes: list[list] = []  # per open collection: [values in it so far, its anchor]
    anchored: dict[str, int] = {}  # anchor -> values in what it names
    total = 0
    for ev in yaml.parse(text, Loader=_CParser):
        if isinstance(ev, yaml.CollectionEndEvent):
            size, anchor = open_sizes.pop()
            if anchor:
                anchored[anchor] = size
            if open_sizes:
                open_sizes[-1][0] += size
            continue
        if not isinstance(ev, yaml.ScalarEvent | yaml.AliasEvent | yaml.CollectionStartEvent):
            continue
        n = anchored.get(ev.anchor, 1) if isinstance(ev, yaml.AliasEvent) else 1
        total += n
        line = ev.start_mark.line + 1
        if total > MAX_VALUES:
            raise YamlRefused(
                f"line {line}: more than {MAX_VALUES:,} values"
                + (" once its aliases are expanded (an alias bomb?)" if anchored else "")
            )
        if isinstance(ev, yaml.CollectionStartEvent):
            open_sizes.append([1, ev.anchor])
            if len(open_sizes) > MAX_DEPTH:
                raise YamlRefused(f"line {line}: nested more than {MAX_DEPTH} levels deep")
            continue
        if isinstance(ev, yaml.ScalarEvent) and ev.anchor:
            anchored[ev.anchor] = 1
        if open_sizes:
            open_sizes[-1][0] += n


class _NoDuplicateKeys(_CParser):
    """A safe loader that refuses a mapping naming one key twice (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in first:
                raise YamlRefused(f"line {line}: duplicate key {key!r} (first on line {first[key]})")
            first[key] = line
        return super().construct_mapping(node, deep)
