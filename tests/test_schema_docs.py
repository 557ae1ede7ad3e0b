"""config/README.md is written from the config schema (issue 24 item 4): it lists every key, and a schema change
without rewriting it fails here."""

from __future__ import annotations

from pathlib import Path

import yaml

from vecflow.cli import main as cli_main
from vecflow.core.schema_docs import Row, load_schema, parameter_rows, render, shape_rows, type_text

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAGE = REPO / "config" / "README.md"


def test_the_committed_page_is_what_the_schema_gives():
    assert PAGE.read_text(encoding="utf-8") == render(load_schema(SCHEMA)), (
        "config/README.md differs from the schema: run `vecflow config-docs --out config/README.md`")


def _property_names(node) -> set[str]:
    """Every key named under ``properties`` anywhere in the schema (read independently of the generator)."""
    names = set()
    if isinstance(node, dict):
        names |= set(node.get("properties", {}))
        for value in node.values():
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


def test_every_key_of_the_schema_has_a_row():
    schema = load_schema(SCHEMA)
    rows = parameter_rows(schema) + [row for rows in shape_rows(schema).values() for row in rows]
    listed = {row.key.rsplit(".", 1)[-1] for row in rows}
    assert _property_names(schema) - listed == set()
    page = render(schema)
    for key in ("summarizer.causal.lora.r", "lvm.runs.<name>.preset", "datasets.<name>.files", "hpo.storage"):
        assert f"| `{key}` |" in page


def test_a_schema_change_changes_the_page(tmp_path, capsys):
    """A key added to the schema, not yet in the committed page: ``--check`` fails, ``--out`` brings it back."""
    schema = load_schema(SCHEMA)
    schema["properties"]["report"]["properties"]["subtitle"] = {"type": "string", "default": "",
                                                               "description": "a line under the title"}
    changed = tmp_path / "schema.yaml"
    changed.write_text(yaml.safe_dump(schema, sort_keys=False), encoding="utf-8")
    page = tmp_path / "README.md"
    page.write_text(PAGE.read_text(encoding="utf-8"), encoding="utf-8")
    assert cli_main(["config-docs", "--schema", str(changed), "--check", str(page)]) == 1
    assert "vecflow config-docs --out" in capsys.readouterr().out
    assert cli_main(["config-docs", "--schema", str(changed), "--out", str(page)]) == 0
    assert "| `report.subtitle` | string | `\"\"` | a line under the title |" in page.read_text(encoding="utf-8")
    assert cli_main(["config-docs", "--schema", str(changed), "--check", str(page)]) == 0


def test_a_missing_schema_is_one_line_naming_it(tmp_path, capsys):
    assert cli_main(["config-docs", "--schema", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: schema not found" in capsys.readouterr().err


SMALL = {
    "definitions": {
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "gen": {"type": "object", "properties": {"beams": {"type": "integer", "minimum": 1, "default": 1}}},
    },
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]+$", "description": "id|name of <run>"},
        "share": {"$ref": "#/definitions/probability", "default": 0.5},
        "mode": {"enum": ["a", "b"], "default": "a"},
        "lambda": {"oneOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": "auto"}], "default": "auto"},
        "ranges": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2,
                                                "maxItems": 2}},
        "section": {"type": "object", "default": {}, "description": "a group", "required": ["inner"],
                    "properties": {"inner": {"type": "boolean"}, "generation": {"$ref": "#/definitions/gen"}}},
        "runs": {"type": "object", "default": {}, "additionalProperties": {
            "type": "object", "properties": {"seed": {"type": "integer", "description": "its seed"}}}},
        "sizes": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}},
    },
}


def test_rows_give_type_default_and_description():
    assert parameter_rows(SMALL) == [
        Row("name", "string matching `^[a-z]+$`", "required", "id|name of <run>"),
        Row("share", "number ≥ 0, ≤ 1", "`0.5`", ""),
        Row("mode", "one of `a`, `b`", "`a`", ""),
        Row("lambda", "number > 0 or `auto`", "`auto`", ""),
        Row("ranges", "list of list of 2 × integer", "—", ""),
        Row("section", "mapping", "`{}`", "a group"),
        Row("section.inner", "boolean", "required", ""),
        Row("section.generation", "[gen](#gen)", "—", ""),
        Row("runs", "mapping of name → mapping", "`{}`", ""),
        Row("runs.<name>.seed", "integer", "—", "its seed"),
        Row("sizes", "mapping of name → integer ≥ 1", "—", ""),
    ]
    assert shape_rows(SMALL) == {"gen": [Row("beams", "integer ≥ 1", "`1`", "")]}
    assert type_text({"type": "array", "items": {"enum": ["x"]}, "minItems": 1}, {}) == "list of one of `x` (at least 1)"


def test_the_page_groups_sections_and_escapes_table_text():
    page = render(SMALL)
    assert "## Top-level keys" in page and "## section" in page and "## runs" in page and "### gen" in page
    # a | would end the cell; <run> outside a code span would be an HTML tag
    assert "| `name` | string matching `^[a-z]+$` | required | id\\|name of &lt;run> |" in page
    assert "| `section.generation` | [gen](#gen) | — |  |" in page
