"""Typed settings (issue 24 item 1): each LVM command's settings model (and the article commands', which the LVM
track runs first) agrees with the config schema (names, types, defaults), the LVM rules send exactly what the
models accept, and the rules change nothing in the config.

A model names the schema sections whose every key is one of its fields (``SCHEMA_SECTIONS``), single keys taken
from elsewhere (``SCHEMA_FIELDS``) and its fields that are no config key (``NOT_IN_SCHEMA``); the checks here
walk those against ``workflow/schemas/config.schema.yaml``.
"""

from __future__ import annotations

import json
import shlex
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from vecflow.core.errors import VecflowError
from vecflow.core.settings import JobSettings, Number
from vecflow.data import settings as data_settings
from vecflow.lvm import settings as lvm_settings
from vecflow.lvm import workflow as lvm_workflow

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))
LVM_MODELS = [lvm_settings.EmbedSettings, lvm_settings.WindowsSettings, lvm_settings.DiagnosticsSettings,
              lvm_settings.FivecatSettings, lvm_settings.LvmTrainSettings, data_settings.ChunkSettings,
              data_settings.SplitSettings]
# the command each model is validated by, as the rules call it
COMMAND_MODEL = {"embed": lvm_settings.EmbedSettings, "windows": lvm_settings.WindowsSettings,
                 "diagnose": lvm_settings.DiagnosticsSettings, "fivecat": lvm_settings.FivecatSettings,
                 "train-lvm": lvm_settings.LvmTrainSettings, "chunk-articles": data_settings.ChunkSettings,
                 "split-articles": data_settings.SplitSettings}


# ------------------------------------------------------------------------------------------- the schema
def resolve(prop: dict, schema: dict = SCHEMA) -> dict:
    """A property with its ``$ref`` expanded (the property's own keys, e.g. its default, win)."""
    if "$ref" not in prop:
        return prop
    target = schema
    for part in prop["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**resolve(target, schema), **{k: v for k, v in prop.items() if k != "$ref"}}


def schema_node(dotted: str, schema: dict = SCHEMA) -> dict:
    """The schema of a dotted config key; ``*`` is any name of a mapping (``lvm.runs.*``: one run's entry)."""
    node = {"properties": schema["properties"]}
    for part in dotted.split("."):
        node = resolve(node["additionalProperties"] if part == "*" else node["properties"][part], schema)
    return node


def filled_default(prop: dict, schema: dict = SCHEMA):
    """The value a key has when the config omits it: its default, an object's with its keys' defaults filled."""
    prop = resolve(prop, schema)
    if prop.get("type") == "object" and "properties" in prop:
        inner = {key: filled_default(sub, schema) for key, sub in prop["properties"].items()
                 if "default" in resolve(sub, schema)}
        return {**inner, **prop.get("default", {})}
    return prop.get("default")


def schema_kinds(prop: dict, schema: dict = SCHEMA) -> set:
    prop = resolve(prop, schema)
    kinds = set()
    for key in ("oneOf", "anyOf"):
        for option in prop.get(key, []):
            kinds |= schema_kinds(option, schema)
    if "enum" in prop:
        kinds |= {("enum", value) for value in prop["enum"]}
    if "const" in prop:
        kinds.add(("enum", prop["const"]))
    types_ = prop.get("type", [])
    kinds |= set([types_] if isinstance(types_, str) else types_)
    return kinds


# ------------------------------------------------------------------------------------------- the models
SIMPLE = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null"}


def annotation_kinds(annotation) -> set:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return annotation_kinds(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(annotation_kinds(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {("enum", value) for value in typing.get_args(annotation)}
    if origin in (list, tuple):
        return {"array"}
    if origin is dict or annotation is dict:
        return {"object"}
    if annotation is typing.Any:
        return {"any"}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"object"}
    return {SIMPLE[annotation]}


def nested_model(annotation):
    """The settings model a field holds (a nested section), or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def kinds_agree(model: set, schema: set, optional: bool) -> bool:
    model = model - ({"null"} if optional else set())
    if "number" in schema:  # an int | float field keeps ints as ints; both are JSON numbers
        model = {"number" if kind == "integer" else kind for kind in model}
    return model == schema or model == {"any"}


def where_from(model) -> dict[str, str | dict]:
    """Field -> the dotted schema key it mirrors (SCHEMA_FIELDS first, then the section that has it, less the
    SCHEMA_OMITTED keys). A key of several sections gets its property with the later sections' laid over the
    earlier's (``summarizer.causal`` over ``summarizer``: a causal key without a default keeps the shared one)."""
    found: dict[str, str | dict] = {}
    omitted = getattr(model, "SCHEMA_OMITTED", frozenset())
    for section in getattr(model, "SCHEMA_SECTIONS", ()):
        for key in schema_node(section).get("properties", {}):
            path = f"{section}.{key}"
            if path in omitted:
                continue
            if key in found:
                earlier = schema_node(found[key]) if isinstance(found[key], str) else found[key]
                found[key] = {**earlier, **schema_node(path)}
            else:
                found[key] = path
    return {**found, **getattr(model, "SCHEMA_FIELDS", {})}


def disagreements(model, where: dict | None = None, schema: dict = SCHEMA) -> list[str]:
    """Every way ``model`` differs from the schema: a section key with no field, a field with no schema key
    (and not in NOT_IN_SCHEMA), a type or a default that differs; nested sections are walked too (``where``:
    field -> dotted schema key, or the property itself for a nested section's keys)."""
    where = where_from(model) if where is None else where
    fields = model.model_fields
    problems = [f"{model.__name__}: schema key {path if isinstance(path, str) else key} has no field"
                for key, path in where.items() if key not in fields]
    not_in_schema = getattr(model, "NOT_IN_SCHEMA", frozenset())
    for name, field in fields.items():
        if name in not_in_schema:
            if name in where:
                problems.append(f"{model.__name__}.{name}: in NOT_IN_SCHEMA, but the schema has {where[name]}")
            continue
        if name not in where:
            problems.append(f"{model.__name__}.{name}: no schema key (add it to the schema or to NOT_IN_SCHEMA)")
            continue
        prop = schema_node(where[name], schema) if isinstance(where[name], str) else where[name]
        optional = not field.is_required() and field.default is None
        kinds, expected = annotation_kinds(field.annotation), schema_kinds(prop, schema)
        if not kinds_agree(kinds, expected, optional):
            problems.append(f"{model.__name__}.{name}: type {sorted(map(str, kinds))}, schema {sorted(map(str, expected))}")
        if field.is_required():
            continue
        inner = nested_model(field.annotation)
        if inner is not None:  # a section: its own keys, one by one
            sub = resolve(prop, schema)
            problems += disagreements(inner, {k: resolve(v, schema) for k, v in sub.get("properties", {}).items()},
                                      schema)
            # a key without a schema default is None in the model (unset, e.g. an optional gate)
            default, wanted = field.default.model_dump(exclude_none=True), filled_default(prop, schema)
        else:
            default, wanted = field.default, resolve(prop, schema).get("default")
        if "default" not in resolve(prop, schema) and inner is None:
            if default is not None:
                problems.append(f"{model.__name__}.{name}: default {default!r}, the schema has none")
        elif default != wanted:
            problems.append(f"{model.__name__}.{name}: default {default!r}, schema {wanted!r}")
    return problems


@pytest.mark.parametrize("model", LVM_MODELS, ids=lambda m: m.__name__)
def test_each_lvm_settings_model_agrees_with_the_schema(model):
    assert disagreements(model) == []


def test_the_check_finds_a_drifted_default_a_missing_key_and_a_stray_field():
    class Drifted(JobSettings):
        SCHEMA_SECTIONS = ("lvm.diagnostics",)
        min_coherence: Number = 0.2  # the schema says 0.40
        min_signal: Number = 0.05
        require_monotonic: bool = False
        # waive_gate missing
        batch_size: int = 64  # no such schema key

    problems = disagreements(Drifted)
    assert "Drifted.min_coherence: default 0.2, schema 0.4" in problems
    assert "Drifted: schema key lvm.diagnostics.waive_gate has no field" in problems
    assert any(p.startswith("Drifted.batch_size: no schema key") for p in problems)


def test_the_check_finds_a_wrong_type():
    class Typed(JobSettings):
        SCHEMA_FIELDS = {**JobSettings.SCHEMA_FIELDS, "context_length": "lvm.context_length"}
        context_length: float = 5

    assert disagreements(Typed) == ["Typed.context_length: type ['number'], schema ['integer']"]


# ------------------------------------------------------------------------------------------- parsing
def test_settings_are_checked_once_with_one_line_naming_the_key():
    run = {"preset": "P1", "arch": "mlp", "epochs": 2, "batch_size": 8, "learning_rate": 1e-3}
    parsed = lvm_settings.LvmTrainSettings.parse(run)
    assert parsed.selection_fraction == 0.1 and parsed.contrast.slots == [3, 5] and parsed.seed == 1234
    assert parsed.received == run  # what the job records: the settings as sent, no defaults added
    cases = [({k: v for k, v in run.items() if k != "arch"}, "settings: missing key 'arch'"),
             ({**run, "epochz": 3}, "settings: unknown key 'epochz'"),
             ({**run, "selection_metric": "val_r5"}, "settings: field 'selection_metric': 'val_r5' is not one of "
                                                      "dominance, forward, val_margin, val_cos, val_loss"),
             ({**run, "epochs": 0}, "settings: field 'epochs': Input should be greater than 0, got 0"),
             ({**run, "contrast": {"slots": [0]}}, "settings: field 'contrast.slots.0': Input should be greater")]
    for settings, message in cases:
        with pytest.raises(VecflowError) as caught:
            lvm_settings.LvmTrainSettings.parse(settings)
        assert str(caught.value).startswith(message), str(caught.value)


def test_the_key_named_is_the_users_not_pydantics_labels():
    # pydantic's error location adds a label per union member tried ('residual.bool'), per validator and '[key]'
    run = {"preset": "P1", "arch": "mlp", "epochs": 2, "batch_size": 8, "learning_rate": 1e-3}
    cases = [(lvm_settings.LvmTrainSettings, {**run, "residual": "foo"}, "settings: field 'residual': "),
             (lvm_settings.DiagnosticsSettings, {"min_coherence": "x"}, "settings: field 'min_coherence': "),
             (lvm_settings.FivecatSettings, {"ridge_lambda": -1}, "settings: field 'ridge_lambda': "),
             (lvm_settings.FivecatSettings, {"thresholds": {"val": {"c1": 0.3}}},
              "settings: field 'thresholds.val.c1': ")]
    for model, settings, message in cases:
        with pytest.raises(VecflowError) as caught:
            model.parse(settings)
        assert str(caught.value).startswith(message), str(caught.value)


def test_numbers_stay_as_given():
    """A config's 1 stays 1 in what the job writes (the fivecat report's settings and gates, config.json)."""
    parsed = lvm_settings.FivecatSettings.parse({"ridge_lambdas": [1, 0.5], "thresholds": {"max_generalisation_gap": 1}})
    assert parsed.ridge_lambdas == [1, 0.5] and type(parsed.ridge_lambdas[0]) is int
    assert parsed.thresholds.model_dump()["max_generalisation_gap"] == 1


# ------------------------------------------------------------------------------------------- the rules
def lvm_config(tmp_path) -> dict:
    from test_workflow import tiny_config
    from tiny_models import make_tiny_causal_lm, make_tiny_encoder

    config = tiny_config(make_tiny_encoder(tmp_path / "enc"), make_tiny_causal_lm(tmp_path / "lm"))
    config["lvm"]["learning_curve"] = {"run": "p1", "fractions": [0.5]}
    config["lvm"]["seeds"] = {"run": "p4", "count": 2}
    return config


def validated(config: dict) -> dict:
    """The config as Snakemake holds it: schema-validated, defaults filled in."""
    from snakemake.utils import validate

    config = json.loads(json.dumps(config))
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def test_the_lvm_rules_send_what_each_model_accepts_and_leave_the_config_as_written(tmp_path):
    """A dry run of the LVM track with a learning curve and seed copies: every LVM job's --settings parses with
    its command's model (a key the rule and the code name differently fails here), and config.resolved.yaml's
    job gets lvm.runs exactly as written (the copies are derived, not added)."""
    from test_workflow import snakemake_cli, write_workdir

    config = lvm_config(tmp_path)
    workdir = write_workdir(tmp_path / "run", config)
    result = snakemake_cli(workdir, "-n", "-p", "results/lvm/learning_curve.json", "results/lvm/seeds.json",
                           "results/config.resolved.yaml")
    assert result.returncode == 0, result.stderr[-2000:]
    seen = {}
    for line in result.stdout.splitlines():
        argv = shlex.split(line.removeprefix("Shell command: ").split(" > ")[0]) if "vecflow " in line else []
        if len(argv) > 2 and argv[0] == "vecflow" and argv[1] in COMMAND_MODEL:
            sent = json.loads(argv[argv.index("--settings") + 1])
            seen.setdefault(argv[1], []).append(COMMAND_MODEL[argv[1]].parse(sent))
        if len(argv) > 2 and argv[:2] == ["vecflow", "resolve-config"]:
            resolved = json.loads(argv[argv.index("--config") + 1])
    assert set(seen) == set(COMMAND_MODEL)
    runs = {parsed.run: parsed for parsed in seen["train-lvm"]}
    assert set(runs) == {"p1", "p4", "p1-lc50", "p4-seed2"}
    assert runs["p1-lc50"].train_fraction == 0.5 and runs["p4-seed2"].seed == runs["p4"].seed + 1
    assert {parsed.train_fraction for parsed in seen["fivecat"]} == {1.0, 0.5}
    assert seen["embed"][0].embed_batch_size == config["lvm"]["embed_batch_size"]
    expected = validated(config)["lvm"]
    [chunk], [split] = seen["chunk-articles"], seen["split-articles"]
    assert chunk.chunking.model_dump() == expected["chunking"] and chunk.format == expected["articles"]["format"]
    assert chunk.max_articles == expected["articles"]["max_articles"]
    assert split.model_dump(exclude=set(JobSettings.model_fields)) == expected["split"]
    assert split.seed == config["seed"]
    assert resolved["lvm"]["runs"] == validated(config)["lvm"]["runs"]  # as written, schema defaults filled in
    assert list(resolved["lvm"]["runs"]) == ["p1", "p4"]


def test_run_copies_are_derived_without_changing_the_config(tmp_path):
    config = validated(lvm_config(tmp_path))
    before = json.dumps(config, sort_keys=True)
    assert list(lvm_workflow.runs(config)) == ["p1", "p4", "p1-lc50", "p4-seed2"]
    assert lvm_workflow.curve_points(config) == ["p1", "p1-lc50"]
    assert lvm_workflow.seed_points(config) == ["p4", "p4-seed2"]
    settings = lvm_workflow.run_settings(config, "p4-seed2")
    assert settings["seed"] == config["seed"] + 1 and settings["run"] == "p4-seed2"
    assert settings["min_article_chunks"] == config["lvm"]["fivecat"]["min_article_chunks"]
    assert json.dumps(config, sort_keys=True) == before
    config["lvm"]["seeds"]["run"] = "p9"
    with pytest.raises(VecflowError, match="config: lvm.seeds.run: 'p9' is not one of lvm.runs"):
        lvm_workflow.runs(config)
