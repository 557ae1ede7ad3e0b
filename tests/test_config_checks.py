"""Unit tests of the config checks' one-line messages (the bad-input cases through Snakemake are in test_bad_input)."""

import jsonschema
import pytest

from vecflow.core.config_checks import _number_literal, schema_error


def _error(schema: dict, instance: dict):
    return next(jsonschema.Draft7Validator(schema).iter_errors(instance))


@pytest.mark.parametrize(
    "text, expected, literal",
    [("5e-4", "number", "5.0e-4"), ("1E3", "number", "1.0e3"), ("3", "number", "3.0"),
     ("1e3", "integer", "1000"), ("8", "integer", "8"), ("2.5e0", "integer", "a whole number (not 2.5e0)")],
)
def test_number_hint_is_a_literal_of_the_expected_type(text, expected, literal):
    assert _number_literal(text, expected) == literal


def test_integer_given_as_exponent_string_gets_an_integer_hint():
    schema = {"type": "object", "properties": {"train": {"type": "object",
                                                          "properties": {"steps": {"type": "integer"}}}}}
    message = schema_error(_error(schema, {"train": {"steps": "1e3"}}), files={})
    assert message == ("config: key 'train.steps': expected integer, got str '1e3'; "
                       "YAML reads 1e3 as a string: write 1000")


def test_unknown_key_names_the_key_not_the_schema():
    schema = {"type": "object", "properties": {"seed": {"type": "integer"}}, "additionalProperties": False}
    message = schema_error(_error(schema, {"seed": 1, "sede": 2}), files={})
    assert message.startswith("config: unknown key 'sede' under the top level")
    assert "\n" not in message


def _merged(*names: str) -> dict:
    """The config Snakemake builds: the Snakefile's config/config.yaml first, then each --configfile on top."""
    from pathlib import Path

    from snakemake.utils import update_config

    from vecflow.core.config_checks import load_config_file

    repo = Path(__file__).resolve().parents[1]
    merged: dict = {}
    for name in ("config.yaml", *names):
        update_config(merged, load_config_file(repo / "config" / name))
    return merged


@pytest.mark.parametrize("name", ["dialogsum.yaml", "wikitext.yaml", "dialogsum-lvm.yaml", "gpu.yaml"])
def test_real_configs_do_not_inherit_the_demos_lenient_gates(name):
    """config/config.yaml lowers the gates so the tiny demo models deploy; a real-data config layered on top
    must restore the real ones, or a summarizer with 50 % duplicate outputs could be selected and shipped."""
    config = _merged(name)
    gates = config["deploy"]["gates"]
    assert gates["summarizer"]["min_distinct_ratio"] >= 0.9
    assert gates["summarizer"]["min_input_margin"] >= 0.0
    assert gates["lvm"]["beat_baselines"] is True and gates["lvm"]["use_fivecat_thresholds"] is True
    if config["tracks"]["summary"]:
        assert config["summarizer"]["min_distinct_ratio"] >= 0.9
    # nor its sizing: one thread per job and a few dialogues make the demo a two-minute run
    assert config["threads"]["train"] > 1 and config["threads"]["eval"] > 1
    if config["tracks"]["summary"]:  # every cap lifted (0 = all) or sized for real data
        assert all(cap == 0 or cap >= 1000 for cap in config["summary"]["max_dialogues"].values())
    assert config["hpo"].get("elm_fixed", {}).get("max_train_samples", 0) == 0  # the trials see every row


def test_a_bad_value_from_the_command_line_is_not_blamed_on_a_file(tmp_path):
    """`--config train.steps=x` over a file that sets steps: 8 names the command line, not the file's line."""
    path = tmp_path / "c.yaml"
    path.write_text("seed: 1\ntrain:\n  steps: 8\n")
    schema = {"type": "object", "properties": {"train": {"type": "object",
                                                          "properties": {"steps": {"type": "integer"}}}}}
    files = {str(path): {"seed": 1, "train": {"steps": 8}}}
    from_cli = schema_error(_error(schema, {"seed": 1, "train": {"steps": "x"}}), files=files)
    assert from_cli.startswith("--config (command line): key 'train.steps': expected integer, got str 'x'")
    # Snakemake parses `--config 'train={steps: 8}'` with YAML's BaseLoader: the 8 arrives as a string
    nested = schema_error(_error(schema, {"seed": 1, "train": {"steps": "8"}}), files=files)
    assert nested.endswith("expected integer, got str '8'; --config reads every value inside {...} as a string: "
                           "set 'train.steps' in a --configfile"), nested
    from_file = schema_error(_error(schema, {"seed": 1, "train": {"steps": "x"}}),
                             files={str(path): {"seed": 1, "train": {"steps": "x"}}})
    assert from_file.startswith(f"{path}:3: key 'train.steps'")
