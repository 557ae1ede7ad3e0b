"""``config/README.md``: every configuration key with its type, default and description, written from the schema.

    vecflow config-docs --out config/README.md          # rewrite it after changing the schema
    vecflow config-docs --check config/README.md        # exit 1 when it differs from what the schema gives

The schema (``workflow/schemas/config.schema.yaml``) is the one place a key is defined: Snakemake validates the
config against it and fills its defaults. This module only reads it, so the page cannot say something the
pipeline does not do; ``tests/test_schema_docs.py`` fails when the committed page is not what this writes.

A key is written dotted (``summarizer.causal.lora.r``); a mapping of names the user chooses (``models``,
``datasets``, ``lvm.runs``) has ``<name>`` in its place. A shape the schema defines once and uses in several
places (``#/definitions/generation`` ...) is one table of its own, linked from each use.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from vecflow.core.errors import VecflowError
from vecflow.core.io import write_text

SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
DEFINITIONS = "#/definitions/"
HEADER = """# Configuration parameters

Every key a vecflow config file may set, with its type, its default and what it does. Unknown keys are errors;
a key left out takes its default (Snakemake fills them in when it validates the config).

This page is written from `workflow/schemas/config.schema.yaml` by `vecflow config-docs --out config/README.md`;
do not edit it by hand (a test fails when it differs from the schema). The config files in this folder
(`config.yaml`, the demo, and the real-data layers laid over it) are described in the top-level README.
"""
TAG_START = re.compile(r"<(?=[A-Za-z/!?])")  # what Markdown would start an HTML tag with
BOUNDS = (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"))


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def load_schema(path: str | Path = SCHEMA) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VecflowError(f"{path}: schema not found (run from the repository root, or give --schema)")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise VecflowError(f"{path}: invalid YAML: {exc}") from None


def _ref_name(node: dict) -> str | None:
    ref = node.get("$ref")
    if ref is None:
        return None
    if not ref.startswith(DEFINITIONS):
        raise VecflowError(f"schema: $ref {ref!r}: only {DEFINITIONS}<name> is supported")
    return ref.removeprefix(DEFINITIONS)


def is_shape(node: dict) -> bool:
    """A definition documented as a table of its own (an object with named keys), not inlined."""
    return node.get("type") == "object" and "properties" in node


def resolve(node: dict, definitions: dict) -> dict:
    """A ``$ref`` to an inline definition (e.g. ``probability``) merged with the keys beside it (a default)."""
    name = _ref_name(node)
    if name is None or is_shape(definitions[name]):
        return node
    return {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}


def _literal(value) -> str:
    """A YAML value as it would be written in a config file, on one line."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else yaml.safe_dump(value).split("\n")[0]


def _code(text: str) -> str:
    return f"`{text}`"


def type_text(node: dict, definitions: dict) -> str:
    """The accepted values in words: ``integer ≥ 1``, ``one of `a`, `b```, ``list of number``, a shape's link."""
    name = _ref_name(node)
    if name is not None and is_shape(definitions[name]):
        return f"[{name}](#{name})"
    node = resolve(node, definitions)
    if "enum" in node:
        return "one of " + ", ".join(_code(_literal(v)) for v in node["enum"])
    if "const" in node:
        return _code(_literal(node["const"]))
    for combinator in ("oneOf", "anyOf"):
        if combinator in node:
            return " or ".join(type_text(option, definitions) for option in node[combinator])
    kind = node.get("type", "any value")
    if kind == "array":
        text = "list" + (f" of {type_text(node['items'], definitions)}" if "items" in node else "")
        if node.get("minItems") and node.get("minItems") == node.get("maxItems"):
            text = f"list of {node['minItems']} × {type_text(node['items'], definitions)}" if "items" in node else text
        elif node.get("minItems"):
            text += f" (at least {node['minItems']})"
        return text
    if kind == "object":
        values = node.get("additionalProperties")
        if isinstance(values, dict) and "properties" not in node:
            return f"mapping of name → {type_text(values, definitions)}"
        return "mapping"
    text = kind
    bounds = [f"{sign} {_literal(node[bound])}" for bound, sign in BOUNDS if bound in node]
    if bounds:
        text += " " + ", ".join(bounds)
    if "pattern" in node:
        text += f" matching {_code(node['pattern'])}"
    return text


def _rows(node: dict, prefix: str, definitions: dict, required=()) -> list[Row]:
    rows = []
    for key, child in node.get("properties", {}).items():
        dotted = f"{prefix}{key}"
        resolved = resolve(child, definitions)
        default = _code(_literal(resolved["default"])) if "default" in resolved else (
            "required" if key in required else "—")
        rows.append(Row(dotted, type_text(child, definitions), default, resolved.get("description", "")))
        if "properties" in resolved and _ref_name(child) is None:
            rows += _rows(resolved, f"{dotted}.", definitions, resolved.get("required", ()))
        values = resolved.get("additionalProperties")
        if isinstance(values, dict) and "properties" in values and _ref_name(values) is None:
            rows += _rows(values, f"{dotted}.<name>.", definitions, values.get("required", ()))
    return rows


def parameter_rows(schema: dict) -> list[Row]:
    """Every key of the config, depth first in the schema's order."""
    return _rows(schema, "", schema.get("definitions", {}), schema.get("required", ()))


def shape_rows(schema: dict) -> dict[str, list[Row]]:
    """The keys of each shape the schema defines once and uses in several places."""
    definitions = schema.get("definitions", {})
    return {name: _rows(node, "", definitions, node.get("required", ()))
            for name, node in definitions.items() if is_shape(node)}


def _cell(text: str) -> str:
    """Table-cell text: a ``|`` would end the cell, and outside a code span ``<name>`` would be an HTML tag."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(part if i % 2 else TAG_START.sub("&lt;", part) for i, part in enumerate(parts))


def table(rows: list[Row]) -> list[str]:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    lines += [f"| {_code(r.key)} | {_cell(r.type)} | {_cell(r.default)} | {_cell(r.description)} |" for r in rows]
    return lines


def render(schema: dict) -> str:
    """The whole page: the top-level keys, one section per top-level mapping, then the shared shapes."""
    rows = parameter_rows(schema)
    sections: dict[str, list[Row]] = {}
    for row in rows:
        head = row.key.split(".")[0]
        nested = any(r.key.startswith(head + ".") for r in rows)
        sections.setdefault(head if nested else "", []).append(row)
    lines = [HEADER.rstrip(), "", "## Top-level keys", ""] + table(sections.pop("", [])) + [""]
    for head, section in sections.items():
        lines += [f"## {head}", ""] + table(section) + [""]
    shapes = shape_rows(schema)
    if shapes:
        lines += ["## Shared shapes", "", "Tables the keys above link to: one shape used in several places.", ""]
        for name, section in shapes.items():
            lines += [f"### {name}", ""] + table(section) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow config-docs",
                                     description="Write config/README.md (every config key) from the schema.")
    parser.add_argument("--schema", default=str(SCHEMA), help=f"the config schema (default: {SCHEMA})")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--out", help="write the page here (default: print it)")
    target.add_argument("--check", metavar="FILE", help="exit 1 when FILE differs from what the schema gives")
    args = parser.parse_args(argv)
    text = render(load_schema(args.schema))
    if args.check:
        path = Path(args.check)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            print(f"vecflow config-docs: {path} is not what {args.schema} gives; rewrite it with "
                  f"`vecflow config-docs --out {path}`")
            return 1
        return 0
    if args.out:
        write_text(args.out, text)
    else:
        print(text, end="")
    return 0
