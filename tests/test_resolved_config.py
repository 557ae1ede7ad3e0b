import yaml

from vecflow.cli import main


def test_resolved_config_round_trips_and_names_its_layers(tmp_path):
    out = tmp_path / "config.yaml"
    config = '{"seed": 7, "lvm": {"context_length": 5}, "tracks": {"lvm": true}}'
    assert main(["resolve-config", "--config", config, "--source", "config/config.yaml",
                 "--source", "config/wikitext.yaml", "--out", str(out)]) == 0
    text = out.read_text()
    assert "# config file: config/config.yaml\n# config file: config/wikitext.yaml\n" in text
    assert yaml.safe_load(text) == {"seed": 7, "lvm": {"context_length": 5}, "tracks": {"lvm": True}}


def test_bad_json_is_a_usage_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "config.yaml"
    try:
        main(["resolve-config", "--config", "{not json", "--out", str(out)])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--config" in capsys.readouterr().err
    assert not out.exists()
