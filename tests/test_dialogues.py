"""ingest-dialogues: both input formats, validation with file:line errors, seeded subsets, leakage checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vecflow.cli import main as cli_main
from vecflow.data.dialogues import ingest_dialogues, load_dialogues, parse_split_args, seeded_subset
from vecflow.core.errors import VecflowError

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _dialogue(i: int, prefix: str = "d") -> dict:
    return {"id": f"{prefix}_{i}", "dialogue": f"#Person1#: Hello {i}.\n#Person2#: Hi.", "summary": f"#Person1# greets {i}.",
            "topic": "greeting"}


def test_vecflow_and_dialogsum_formats_are_normalised(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [
        {"id": "a", "dialogue": "  #Person1#: Hi.\r\n#Person2#: Hello.  ", "summary": " #Person1# says hi. "},
        {"id": "b", "dialogue": "#Person1#: x", "summaries": ["one", "two"], "topic": None},
        {"fname": "train_7", "dialogue": "#Person1#: y\n#Person3#: z", "summary": "s", "topic": "shopping"},
        {"fname": "test_1", "dialogue": "#Person1#: q", "summary2": "second", "summary1": "first", "summary3": "third",
         "topic1": "travel", "topic2": "trip"},
    ])
    rows = load_dialogues(path)
    assert rows[0] == {"id": "a", "dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summaries": ["#Person1# says hi."],
                       "topic": None}
    assert rows[1]["summaries"] == ["one", "two"] and rows[1]["topic"] is None
    assert rows[2] == {"id": "train_7", "dialogue": "#Person1#: y\n#Person3#: z", "summaries": ["s"], "topic": "shopping"}
    assert rows[3]["summaries"] == ["first", "second", "third"] and rows[3]["topic"] == "travel"


@pytest.mark.parametrize(
    "record, message",
    [
        ({"dialogue": "x", "summary": "y"}, r"bad\.jsonl:2: field 'id': missing"),
        ({"id": 5, "dialogue": "x", "summary": "y"}, r"bad\.jsonl:2: field 'id': expected str, got int"),
        ({"id": "b", "summary": "y"}, r"bad\.jsonl:2: field 'dialogue': missing"),
        ({"id": "b", "dialogue": "   ", "summary": "y"}, r"bad\.jsonl:2: field 'dialogue': empty"),
        ({"id": "b", "dialogue": "x"}, r"bad\.jsonl:2: field 'summary': missing"),
        ({"id": "b", "dialogue": "x", "summaries": []}, r"bad\.jsonl:2: field 'summaries': expected a non-empty list"),
        ({"id": "b", "dialogue": "x", "summaries": ["ok", 3]}, r"bad\.jsonl:2: field 'summaries\[1\]': expected str"),
        ({"id": "b", "dialogue": "x", "summary": "y", "summaries": ["z"]}, r"bad\.jsonl:2: give only one of summary, summaries"),
        ({"id": "b", "dialogue": "x", "summary": "y", "topic": 3}, r"bad\.jsonl:2: field 'topic': expected str or null"),
        ({"id": "a", "dialogue": "x", "summary": "y"}, r"bad\.jsonl:2: field 'id': duplicate id 'a' \(first at line 1\)"),
        ("[1, 2]", r"bad\.jsonl:2: expected a JSON object"),
        ("{not json", r"bad\.jsonl:2: invalid JSON"),
    ],
)
def test_bad_records_name_file_line_and_field(tmp_path, record, message):
    path = _jsonl(tmp_path / "bad.jsonl", [{"id": "a", "dialogue": "x", "summary": "y"}, record])
    with pytest.raises(VecflowError, match=message):
        load_dialogues(path)


def test_dialogues_to_summarize_may_lack_summaries(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "5", "dialogue": "hi"}, {"id": "6", "dialogue": "yo", "summaries": []},
                                         {"id": "7", "dialogue": "hey", "summary": "s"}])
    assert load_dialogues(path, need_summaries=False) == [
        {"id": "5", "dialogue": "hi", "summaries": [], "topic": None},
        {"id": "6", "dialogue": "yo", "summaries": [], "topic": None},
        {"id": "7", "dialogue": "hey", "summaries": ["s"], "topic": None},
    ]
    with pytest.raises(VecflowError, match=r"d\.jsonl:1: field 'summary': missing"):
        load_dialogues(path)
    with pytest.raises(VecflowError, match=r"d\.jsonl:1: field 'summaries\[0\]': expected str"):
        load_dialogues(_jsonl(tmp_path / "d.jsonl", [{"id": "5", "dialogue": "hi", "summaries": [3]}]),
                       need_summaries=False)


def test_every_stage_reads_dialogues_with_this_module():
    """The summarizers and synthesis read the normalised files with this module's reader (issue 12): no copy."""
    from vecflow.data import synthesis
    from vecflow.summary import causal, seq2seq

    for module in (seq2seq, causal, synthesis):
        assert module.load_dialogues is load_dialogues
        assert not hasattr(module, "read_dialogues")


def test_empty_and_missing_files_are_errors(tmp_path):
    with pytest.raises(VecflowError, match=r"empty\.jsonl: no dialogues"):
        load_dialogues(_jsonl(tmp_path / "empty.jsonl", []))
    with pytest.raises(VecflowError, match=r"nope\.jsonl: file not found"):
        load_dialogues(tmp_path / "nope.jsonl")


def test_seeded_subset_keeps_file_order_and_is_reproducible():
    rows = [{"id": str(i)} for i in range(50)]
    first = seeded_subset(rows, 10, seed=7, split="train")
    assert first == seeded_subset(rows, 10, seed=7, split="train")
    assert first != seeded_subset(rows, 10, seed=8, split="train")
    ids = [int(r["id"]) for r in first]
    assert len(ids) == 10 and ids == sorted(ids)
    assert seeded_subset(rows, None, 7, "train") == rows and seeded_subset(rows, 99, 7, "train") == rows


def test_ingest_writes_splits_and_stats(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [_dialogue(i, "t") for i in range(20)])
    val = _jsonl(tmp_path / "val.jsonl", [_dialogue(i, "v") for i in range(5)])
    out = tmp_path / "out"
    stats = ingest_dialogues({"train": train, "val": val}, {"seed": 3, "max_dialogues": {"train": 6}}, out,
                             tmp_path / "stats.json")

    written = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(written) == 6 and [int(r["id"][2:]) for r in written] == sorted(int(r["id"][2:]) for r in written)
    assert set(written[0]) == {"id", "dialogue", "summaries", "topic"}
    assert len((out / "val.jsonl").read_text().splitlines()) == 5
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    s = stats["splits"]["train"]
    assert (s["dialogues_in_file"], s["dialogues"], s["summaries"]) == (20, 6, 6)
    assert s["speakers"] == ["#Person1#", "#Person2#"] and s["mean_turns"] == 2
    assert s["mean_summary_words"] == 3 and s["top_topics"] == {"greeting": 6}

    # 0 = every dialogue: how a config layered over the demo's cap lifts it
    stats = ingest_dialogues({"train": train, "val": val}, {"seed": 3, "max_dialogues": {"train": 0}}, out,
                             tmp_path / "stats.json")
    uncapped = ingest_dialogues({"train": train, "val": val}, {"seed": 3}, tmp_path / "o2", tmp_path / "s2.json")
    assert stats["splits"]["train"]["dialogues"] > 6 and stats["max_dialogues"] == {}
    assert stats["splits"]["train"] == uncapped["splits"]["train"]


def test_an_id_in_two_splits_fails_naming_both_files_and_writes_nothing(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [_dialogue(1), _dialogue(2)])
    val = _jsonl(tmp_path / "val.jsonl", [_dialogue(3), _dialogue(2)])
    out = tmp_path / "out"
    with pytest.raises(VecflowError, match=r"id 'd_2' is in two splits: .*train\.jsonl:2 \(train\) and .*val\.jsonl:2 \(val\)"):
        ingest_dialogues({"train": train, "val": val}, {"seed": 1}, out, tmp_path / "stats.json")
    assert not out.exists() and not (tmp_path / "stats.json").exists()


def test_bad_max_dialogues_settings(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [_dialogue(1)])
    with pytest.raises(VecflowError, match=r"'max_dialogues\.test': no such split \(have: train\)"):
        ingest_dialogues({"train": train}, {"seed": 1, "max_dialogues": {"test": 3}}, tmp_path / "o", tmp_path / "s.json")


def test_the_schema_checks_the_summary_settings_ingest_reads():
    """ingest relies on the schema for the types and ranges of its settings (it checks only the split names)."""
    assert schema_errors("summary", {"splits": {"train": "a", "val": "b"}}) == []
    assert schema_errors("summary", {"splits": {"train": "a", "val": "b"}, "max_dialogues": {"train": 0}}) == []
    assert schema_errors("summary", {"splits": {"train": "a", "val": "b"}, "max_dialogues": {"train": -1}})
    assert schema_errors("summary", {"splits": {"train": "a", "val": "b"}, "selection_dialogues": -1})
    assert schema_errors("summary", {"splits": {"train": "a", "val": "b"}, "selection_dialogues": "4"})


def schema_errors(section: str, value) -> list[str]:
    """Messages of the config schema's section ``section`` on ``value`` (as snakemake's validate() runs it)."""
    import jsonschema
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    sub = {**schema["properties"][section], "definitions": schema["definitions"]}
    return [error.message for error in jsonschema.Draft202012Validator(sub).iter_errors(value)]


def test_split_arguments():
    assert parse_split_args(["train=a.jsonl", "val=b=c.jsonl"]) == {"train": Path("a.jsonl"), "val": Path("b=c.jsonl")}
    with pytest.raises(VecflowError, match="expected NAME=PATH"):
        parse_split_args(["train"])
    with pytest.raises(VecflowError, match="split 'train' given twice"):
        parse_split_args(["train=a", "train=b"])


def test_demo_data_is_valid_and_disjoint(tmp_path):
    train, val = load_dialogues(DEMO / "dialogues_train.jsonl"), load_dialogues(DEMO / "dialogues_val.jsonl")
    assert len(train) >= 30 and len(val) >= 8
    assert train[0]["id"] == "demo_train_0001" and val[0]["id"] == "demo_val_0001"
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    for row in train + val:
        turns = row["dialogue"].splitlines()
        assert 3 <= len(turns) <= 8 and all(t.startswith("#Person") for t in turns)
        assert "#Person" in row["summaries"][0] and row["topic"]
    assert any("#Person3#" in row["dialogue"] for row in train)


def test_cli_ingest_demo_and_bad_input(tmp_path, capsys):
    settings = json.dumps({"seed": 1234, "device": "cpu", "max_dialogues": {"train": 5}})
    argv = ["ingest-dialogues", "--split", f"train={DEMO / 'dialogues_train.jsonl'}", "--split",
            f"val={DEMO / 'dialogues_val.jsonl'}", "--settings", settings, "--out-dir", str(tmp_path / "d"),
            "--stats", str(tmp_path / "stats.json")]
    assert cli_main(argv) == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["splits"]["train"]["dialogues"] == 5 and stats["splits"]["val"]["dialogues"] == 10
    assert "#Person1#" in (tmp_path / "d" / "train.jsonl").read_text()  # speaker tags kept verbatim

    bad = _jsonl(tmp_path / "bad.jsonl", [{"id": "x", "dialogue": "#Person1#: hi"}])
    argv = ["ingest-dialogues", "--split", f"train={bad}", "--settings", settings.replace('"train": 5', '"x": 1'),
            "--out-dir", str(tmp_path / "e"), "--stats", str(tmp_path / "e.json")]
    assert cli_main(argv) == 2
    assert "max_dialogues.x': no such split" in capsys.readouterr().err
    argv[4] = json.dumps({"seed": 1})
    assert cli_main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"vecflow ingest-dialogues: error: {bad}:1: field 'summary': missing (give 'summary' or 'summaries')")
    assert not (tmp_path / "e").exists()


def test_real_dialogsum_subset(shared_data, tmp_path):
    paths = {"train": shared_data / "dialogsum" / "train.jsonl", "val": shared_data / "dialogsum" / "dev.jsonl"}
    stats = ingest_dialogues(paths, {"seed": 1, "max_dialogues": {"train": 300, "val": 50}}, tmp_path / "d",
                             tmp_path / "stats.json")
    assert stats["splits"]["train"]["dialogues"] == 300 and stats["splits"]["val"]["dialogues"] == 50
    assert stats["splits"]["train"]["dialogues_in_file"] > 10_000
    assert {"#Person1#", "#Person2#"} <= set(stats["splits"]["train"]["speakers"])
    row = json.loads((tmp_path / "d" / "train.jsonl").read_text().splitlines()[0])
    assert row["id"].startswith("train_") and row["dialogue"].startswith("#Person1#:")


def test_training_dialogues_that_repeat_an_eval_dialogue_are_dropped_and_counted(tmp_path):
    rows = [_dialogue(i, "t") for i in range(6)]
    repeat = dict(_dialogue(0, "v"), dialogue=rows[2]["dialogue"].upper() + "  (an edit at the end)")
    train = _jsonl(tmp_path / "train.jsonl", rows)
    val = _jsonl(tmp_path / "val.jsonl", [repeat, _dialogue(99, "v")])
    stats = ingest_dialogues({"train": train, "val": val}, {"seed": 1, "leakage_prefix_chars": 20},
                             tmp_path / "out", tmp_path / "stats.json")
    kept = [json.loads(line)["id"] for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert rows[2]["id"] not in kept and len(kept) == 5  # same first 20 characters, case and spacing aside
    assert stats["leakage"]["eval_dialogues_repeating_train"] == {"val": 1}
    assert stats["leakage"]["train_dialogues_dropped"] == 1
    whole = ingest_dialogues({"train": train, "val": val}, {"seed": 1, "leakage_prefix_chars": 0},
                             tmp_path / "out2", tmp_path / "stats2.json")
    assert whole["leakage"]["train_dialogues_dropped"] == 0  # the whole text differs: not a repeat
