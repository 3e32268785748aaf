"""``StrictKeys``: a YAML loader's mappings without the keys YAML lets through silently.

A mapping that repeats a key (YAML forbids it; PyYAML keeps the last one) and an unquoted key
that YAML 1.1 reads as a boolean (``off:``, ``yes:``, ``no:``, ``on:``) are refused, naming the
line. The gateway's config (``app.config``) and prompt template files (``app.prompts.sync``)
load with it.
"""

from __future__ import annotations

from typing import Any

import yaml


class StrictKeys:
    """A mixin before a ``yaml`` loader class (``class L(StrictKeys, yaml.SafeLoader)``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *base": its keys may repeat
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            line = key_node.start_mark.line + 1
            if isinstance(key, bool):  # unquoted no, yes, off, on, false, true (any case)
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key_node.value!r} on line {line} is read as a "
                    f"boolean ({str(key).lower()}): quote it ('{key_node.value}')",
                    key_node.start_mark)
            try:
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} on line {line} (first on line "
                        f"{first[key]})", key_node.start_mark)
            except TypeError:  # an unhashable key: the base class says so
                break
            first[key] = line
        mapping: dict[Any, Any] = super().construct_mapping(  # type: ignore[misc]
            node, deep=deep)
        return mapping
