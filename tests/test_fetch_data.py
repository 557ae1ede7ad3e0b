"""vecflow fetch-data (issue 25): named data sets, local files checked in place, hub files with the network mocked
at the client, data:<name>/<key> references, one-line errors and no partial output; the fetch_data rule."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.data import fetch
from vecflow.data.fetch import fetch_datasets, manifests_for, resolve_references
from workflow_api import REPO

DEMO = REPO / "resources" / "demo"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def dialogues_file(path: Path, rows=None) -> Path:
    rows = rows or [
        {"fname": "train_1", "dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet.", "topic": "greeting"},
        {"fname": "train_2", "dialogue": "#Person1#: Bye.\n#Person2#: See you.", "summary": "They part."},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def wikitext_file(path: Path) -> Path:
    path.write_text(" \n = Robert Boulter = \n \n Robert Boulter is an English actor . \n \n = = Career = = \n"
                    " He had a guest role in 2000 . \n = Second Article = \n Text of it . \n")
    return path


def local(files, fmt="dialogues", **extra) -> dict:
    return {"source": "local", "format": fmt, "files": {k: str(v) for k, v in files.items()}, **extra}


# --------------------------------------------------------------------------------------------- local


def test_local_files_are_checked_in_place_and_never_copied(tmp_path):
    train = dialogues_file(tmp_path / "train.jsonl")
    wiki = wikitext_file(tmp_path / "valid.txt")
    data_dir = tmp_path / "data"
    manifests = fetch_datasets({"dsum": local({"train": train}), "wiki": local({"valid": wiki}, "wikitext")}, data_dir)

    written = json.loads((data_dir / "dsum" / "manifest.json").read_text())
    assert written == manifests["dsum"]
    assert written["files"]["train"] == {"path": str(train), "sha256": sha(train), "bytes": train.stat().st_size,
                                         "records": 2}
    assert json.loads((data_dir / "wiki" / "manifest.json").read_text())["files"]["valid"]["records"] == 2
    # only the manifests: the user's data (DialogSum is CC BY-NC-SA) is never copied
    assert sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")) == [
        "dsum", "dsum/manifest.json", "wiki", "wiki/manifest.json"]


@pytest.mark.parametrize("bad, message", [
    ({"fname": "x", "dialogue": "#Person1#: Hi."}, "bad.jsonl:2: field 'summary': missing"),
    ({"fname": "x", "summary": "s"}, "bad.jsonl:2: field 'dialogue': missing"),
    ({"dialogue": "d", "summary": "s"}, "bad.jsonl:2: field 'id': missing"),
    ({"fname": "train_1", "dialogue": "d", "summary": "s"}, "bad.jsonl:2: field 'id': duplicate id 'train_1'"),
])
def test_a_bad_dialogue_line_is_one_error_and_nothing_is_written(tmp_path, bad, message):
    good = dialogues_file(tmp_path / "good.jsonl")
    rows = [{"fname": "train_1", "dialogue": "#Person1#: Hi.", "summary": "Hi."}, bad]
    bad_file = dialogues_file(tmp_path / "bad.jsonl", rows)
    data_dir = tmp_path / "data"
    # the good data set comes first: its manifest must not be written either
    with pytest.raises(VecflowError) as err:
        fetch_datasets({"a": local({"train": good}), "b": local({"train": bad_file})}, data_dir)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not list(data_dir.rglob("*.json"))


def test_not_wikitext_and_missing_file_and_pinned_checksum(tmp_path):
    text = tmp_path / "plain.txt"
    text.write_text("just some text\nwithout headings\n")
    with pytest.raises(VecflowError, match=r"plain.txt: no ' = Title = ' heading"):
        fetch_datasets({"w": local({"valid": text}, "wikitext")}, tmp_path / "data")
    with pytest.raises(VecflowError, match=r"datasets.w.files.valid: file '.*nope.txt' not found"):
        fetch_datasets({"w": local({"valid": tmp_path / "nope.txt"}, "wikitext")}, tmp_path / "data")
    wiki = wikitext_file(tmp_path / "valid.txt")
    with pytest.raises(VecflowError, match=r"datasets.w.sha256.valid: .*the config pins " + "0" * 64):
        fetch_datasets({"w": local({"valid": wiki}, "wikitext", sha256={"valid": "0" * 64})}, tmp_path / "data")
    fetch_datasets({"w": local({"valid": wiki}, "wikitext", sha256={"valid": sha(wiki)})}, tmp_path / "data")
    assert (tmp_path / "data" / "w" / "manifest.json").is_file()


def test_cli_bad_input_exits_2_with_one_line_and_no_output(tmp_path, capsys):
    bad = dialogues_file(tmp_path / "bad.jsonl", [{"fname": "x", "dialogue": "d", "summary": 3}])
    settings = json.dumps({"seed": 1, "device": "cpu", "d": local({"train": bad})})
    code = cli_main(["fetch-data", "--settings", settings, "--data-dir", str(tmp_path / "data")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "bad.jsonl:1: field 'summary': expected str, got int" in err
    assert not (tmp_path / "data" / "d").exists()
    good = dialogues_file(tmp_path / "good.jsonl")
    settings = json.dumps({"d": local({"train": good})})
    assert cli_main(["fetch-data", "--settings", settings, "--data-dir", str(tmp_path / "data")]) == 0
    assert "data set d (local, dialogues): train=" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ hub (mocked)


class FakeHub:
    """huggingface_hub's client calls, answered from local files (the network is never used)."""

    def __init__(self, files: dict[str, Path], commit: str = COMMIT, fail: Exception | None = None):
        self.files, self.commit, self.fail, self.calls = files, commit, fail, []

    def install(self, monkeypatch):
        import huggingface_hub

        hub = self

        class Api:
            def dataset_info(self, repo_id, revision=None):
                hub.calls.append(("info", repo_id, revision))
                if hub.fail:
                    raise hub.fail
                return type("Info", (), {"sha": hub.commit})()

        def hf_hub_download(repo_id, filename, repo_type=None, revision=None, **kw):
            hub.calls.append(("download", repo_id, filename, repo_type, revision))
            return str(hub.files[filename])

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


def hub_spec(**extra) -> dict:
    return {"source": "hub", "format": "dialogues", "id": "someone/dialogsum", "revision": "main",
            "files": {"train": "train.csv", "dev": "validation.jsonl"}, **extra}


def csv_file(path: Path) -> Path:
    path.write_text('id,dialogue,summary,topic\ntrain_0,"#Person1#: Hi, you.\n#Person2#: Hello.",They greet.,hi\n'
                    'train_1,#Person1#: Bye.,They part.,bye\n')
    return path


def test_hub_files_are_downloaded_at_the_resolved_commit_converted_and_recorded(tmp_path, monkeypatch):
    hub = FakeHub({"train.csv": csv_file(tmp_path / "train.csv"),
                   "validation.jsonl": dialogues_file(tmp_path / "validation.jsonl")})
    hub.install(monkeypatch)
    data_dir = tmp_path / "data"
    manifest = fetch_datasets({"dsum": hub_spec()}, data_dir)["dsum"]

    assert ("info", "someone/dialogsum", "main") in hub.calls
    assert {c[4] for c in hub.calls if c[0] == "download"} == {COMMIT}  # what is downloaded is the pinned commit
    assert {c[3] for c in hub.calls if c[0] == "download"} == {"dataset"}
    assert manifest["commit"] == COMMIT and manifest["revision"] == "main"
    rows = [json.loads(line) for line in (data_dir / "dsum" / "train.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "train_0", "dialogue": "#Person1#: Hi, you.\n#Person2#: Hello.", "summary": "They greet.",
                       "topic": "hi"}
    train = manifest["files"]["train"]
    assert train["path"] == str(data_dir / "dsum" / "train.jsonl") and train["records"] == 2
    assert train["sha256"] == sha(data_dir / "dsum" / "train.jsonl")
    assert train["source_sha256"] == sha(tmp_path / "train.csv") and train["source_file"] == "train.csv"
    assert json.loads((data_dir / "dsum" / "manifest.json").read_text()) == manifest


def test_hub_pinned_checksum_mismatch_and_bad_rows_write_nothing(tmp_path, monkeypatch):
    bad = tmp_path / "validation.jsonl"
    bad.write_text('{"id": "a", "dialogue": "d", "summary": "s"}\n{"id": "b", "dialogue": "", "summary": "s"}\n')
    FakeHub({"train.csv": csv_file(tmp_path / "train.csv"), "validation.jsonl": bad}).install(monkeypatch)
    data_dir = tmp_path / "data"
    with pytest.raises(VecflowError) as err:
        fetch_datasets({"dsum": hub_spec()}, data_dir)
    # the hub file's name, not the temporary copy's
    assert str(err.value) == "someone/dialogsum/validation.jsonl:2: field 'dialogue': empty"
    with pytest.raises(VecflowError, match=r"datasets.dsum.sha256.train: someone/dialogsum/train.csv@0123456789ab "
                                           r"has sha256 [0-9a-f]{64}, the config pins f{64}"):
        fetch_datasets({"dsum": hub_spec(sha256={"train": "f" * 64})}, data_dir)
    assert not list(data_dir.rglob("*.json*"))


def test_hub_offline_is_one_line_naming_the_data_set(tmp_path, monkeypatch):
    FakeHub({}, fail=OSError("We have no connection\nsecond line")).install(monkeypatch)
    with pytest.raises(VecflowError) as err:
        fetch_datasets({"dsum": hub_spec()}, tmp_path / "data")
    assert str(err.value).startswith("datasets.dsum.id: cannot reach 'someone/dialogsum@main' on the HF hub")
    assert "\n" not in str(err.value) and not (tmp_path / "data" / "dsum").exists()


@pytest.mark.parametrize("spec, message", [
    ({"source": "ftp", "format": "dialogues", "files": {"a": "x"}}, "datasets.d.source: 'ftp' is not one of"),
    ({"source": "local", "format": "csv", "files": {"a": "x"}}, "datasets.d.format: 'csv' is not one of"),
    ({"source": "hub", "format": "dialogues", "files": {"a": "x.csv"}}, "datasets.d.id: required for source: hub"),
    ({"source": "hub", "format": "wikitext", "id": "i", "revision": "r", "files": {"a": "x.xlsx"}},
     "datasets.d.files.a: 'x.xlsx' is not one of"),
    ({"source": "local", "format": "dialogues", "files": {"a": "x"}, "sha256": {"b": "0" * 64}},
     "datasets.d.sha256.b: no such key in files"),
])
def test_bad_entries_name_the_key(spec, message, tmp_path):
    with pytest.raises(VecflowError, match=message.replace(".", r"\.")):
        fetch_datasets({"d": spec}, tmp_path)


# ------------------------------------------------------------------------------------ parquet (hub)

WIKI_PARQUET = "wikitext-2-v1/validation-00000-of-00001.parquet"


def wiki_hub_spec(**extra) -> dict:
    return {"source": "hub", "format": "wikitext", "id": "Salesforce/wikitext", "revision": "main",
            "files": {"valid": WIKI_PARQUET}, **extra}


def parquet_file(path: Path, columns: dict) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def hub_wikitext_rows(text: str) -> list[str]:
    """The rows the hub's Salesforce/wikitext stores for a raw text file: one per line, the line with its
    newline, a blank line as "" (the datasets loader it was made with)."""
    return [line if line.strip() else "" for line in text.splitlines(keepends=True)]


def test_a_parquet_wikitext_file_becomes_the_text_file_it_was_made_from(tmp_path, monkeypatch):
    from vecflow.data.articles import read_wikitext

    raw = wikitext_file(tmp_path / "wiki.valid.tokens")
    rows = hub_wikitext_rows(raw.read_text())
    assert "" in rows and rows[1] == " = Robert Boulter = \n"
    parquet = parquet_file(tmp_path / "validation.parquet", {"text": rows})
    hub = FakeHub({WIKI_PARQUET: parquet})
    hub.install(monkeypatch)
    data_dir = tmp_path / "data"
    manifest = fetch_datasets({"wikitext-2": wiki_hub_spec()}, data_dir)["wikitext-2"]

    written = data_dir / "wikitext-2" / "valid.txt"
    assert ("download", "Salesforce/wikitext", WIKI_PARQUET, "dataset", COMMIT) in hub.calls
    assert read_wikitext(written) == read_wikitext(raw)  # the same articles, titles and paragraphs
    assert [title for _, title, _ in read_wikitext(written)] == ["Robert Boulter", "Second Article"]
    assert written.read_bytes() == raw.read_bytes()  # WikiText's blank lines (" \n") come back: byte for byte
    valid = manifest["files"]["valid"]
    assert valid["records"] == 2 and valid["source_file"] == WIKI_PARQUET
    assert valid["sha256"] == sha(written) and valid["source_sha256"] == sha(parquet)


def test_parquet_rows_become_jsonl_objects_and_a_bad_parquet_is_one_line(tmp_path, monkeypatch):
    train = parquet_file(tmp_path / "train.parquet", {
        "id": ["train_0", "train_1"], "dialogue": ["#Person1#: Hi.\n#Person2#: Hello.", "#Person1#: Bye."],
        "summary": ["They greet.", "They part."], "topic": ["hi", None]})
    wiki_without_text = parquet_file(tmp_path / "no-text.parquet", {"line": [" = A = \n"]})
    not_parquet = tmp_path / "broken.parquet"
    not_parquet.write_text("this is not parquet")
    FakeHub({"train.parquet": train, "dev.jsonl": dialogues_file(tmp_path / "dev.jsonl"),
             "no-text.parquet": wiki_without_text, "broken.parquet": not_parquet}).install(monkeypatch)
    data_dir = tmp_path / "data"
    spec = hub_spec(files={"train": "train.parquet", "dev": "dev.jsonl"})
    assert fetch_datasets({"dsum": spec}, data_dir)["dsum"]["files"]["train"]["records"] == 2
    rows = [json.loads(line) for line in (data_dir / "dsum" / "train.jsonl").read_text().splitlines()]
    assert rows == [{"id": "train_0", "dialogue": "#Person1#: Hi.\n#Person2#: Hello.", "summary": "They greet.",
                     "topic": "hi"},
                    {"id": "train_1", "dialogue": "#Person1#: Bye.", "summary": "They part."}]  # a null: left out
    for filename, message in [
        ("no-text.parquet", "Salesforce/wikitext/no-text.parquet: no 'text' column (columns: line)"),
        ("broken.parquet", "Salesforce/wikitext/broken.parquet: cannot read as parquet: "),
    ]:
        with pytest.raises(VecflowError) as err:
            fetch_datasets({"w": wiki_hub_spec(files={"valid": filename})}, tmp_path / "other")
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert not (tmp_path / "other" / "w").exists()


def test_without_pyarrow_a_parquet_file_is_one_line_before_any_download(tmp_path, monkeypatch):
    hub = FakeHub({})
    hub.install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(VecflowError) as err:
        fetch_datasets({"wikitext-2": wiki_hub_spec()}, tmp_path / "data")
    assert str(err.value) == (f"datasets.wikitext-2.files.valid: '{WIKI_PARQUET}': reading a .parquet file needs "
                              f"pyarrow: pip install pyarrow (or pip install -e '.[hub]')")
    assert hub.calls == [] and not (tmp_path / "data" / "wikitext-2").exists()
    with pytest.raises(VecflowError, match=r"^Salesforce/wikitext/x.parquet: reading a .parquet file needs pyarrow: "
                                           r"pip install pyarrow"):
        fetch.convert_file(tmp_path / "x.parquet", tmp_path / "x.txt", "wikitext",
                           shown="Salesforce/wikitext/x.parquet")


# -------------------------------------------------------------------------------------- references


def test_references_resolve_to_the_reported_paths():
    config = {
        "data_dir": "resources/data",
        "datasets": {"dsum": hub_spec(), "mine": local({"train": "/x/train.jsonl"}),
                     "wiki": {"source": "hub", "format": "wikitext", "id": "w", "revision": "r",
                              "files": {"valid": "valid.txt"}}},
        "summary": {"splits": {"train": "data:mine/train", "val": "data:dsum/dev", "extra": "plain/path.jsonl"}},
        "lvm": {"articles": {"input": "data:wiki/valid", "ood_input": ""}},
    }
    used = resolve_references(config)
    assert config["summary"]["splits"] == {"train": "/x/train.jsonl", "val": "resources/data/dsum/dev.jsonl",
                                           "extra": "plain/path.jsonl"}
    assert config["lvm"]["articles"]["input"] == "resources/data/wiki/valid.txt"
    assert used == {"summary.splits.train": "mine", "summary.splits.val": "dsum", "lvm.articles.input": "wiki"}
    assert manifests_for(["/x/train.jsonl", "plain/path.jsonl"], config["datasets"], "resources/data") == [
        "resources/data/mine/manifest.json"]


@pytest.mark.parametrize("value, message", [
    ("data:nope/train", "config: summary.splits.train: 'data:nope/train' names no data set (datasets: mine)"),
    ("data:mine/dev", "config: summary.splits.train: data set 'mine' has no file 'dev' (files: train)"),
    ("data:mine", "config: summary.splits.train: 'data:mine' is not a data:<name>/<key> reference"),
])
def test_bad_references_are_one_line(value, message):
    config = {"datasets": {"mine": local({"train": "t.jsonl"})}, "summary": {"splits": {"train": value}}}
    with pytest.raises(VecflowError) as err:
        resolve_references(config)
    assert str(err.value) == message


# ------------------------------------------------------------------------------------------ the rule


def overlay(tmp_path, results: Path, source_dir: Path) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump({
        "results_dir": str(results),
        "tracks": {"lvm": False, "summary": True, "elm": False, "hpo": False, "deploy": False},
        "data_dir": str(tmp_path / "resources-data"),
        "datasets": {"demo": local({"train": source_dir / "dialogues_train.jsonl",
                                    "dev": source_dir / "dialogues_val.jsonl"})},
        "summary": {"splits": {"train": "data:demo/train", "val": "data:demo/dev"}},
    }))
    return path


def test_the_dag_plans_fetch_data_before_ingest(tmp_path):
    import subprocess

    snakemake = str(Path(sys.executable).with_name("snakemake"))
    config = overlay(tmp_path, tmp_path / "results", DEMO)
    result = subprocess.run([snakemake, "--cores", "1", "-n", "--nolock", "--configfile", str(config),
                             "--until", "ingest_dialogues"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    assert "rule fetch_data:" in plan and str(tmp_path / "resources-data" / "demo" / "manifest.json") in plan
    assert "rule ingest_dialogues:" in plan
    # a bad reference stops the workflow before any job, in one line
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"summary": {"splits": {"train": "data:nope/train"}}}))
    result = subprocess.run([snakemake, "--cores", "1", "-n", "--nolock", "--configfile", str(config), str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "config: summary.splits.train: 'data:nope/train' names no data set (datasets: demo)" in (
        result.stdout + result.stderr)
    assert "Traceback" not in result.stdout + result.stderr


def test_the_wikitext_config_fetches_wikitext_2_from_the_hub(tmp_path):
    """config/wikitext.yaml reads WikiText-2 through fetch_data (hub Salesforce/wikitext), not a path outside the
    repository: the dry run plans fetch_data, then chunk_articles on the file it writes."""
    import subprocess

    config = yaml.safe_load((REPO / "config" / "wikitext.yaml").read_text())
    assert config["lvm"]["articles"]["input"] == "data:wikitext-2/valid"
    assert config["datasets"]["wikitext-2"]["source"] == "hub"
    overlay_file = tmp_path / "dirs.yaml"
    data_dir = tmp_path / "resources-data"
    overlay_file.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results"), "data_dir": str(data_dir)}))
    snakemake = str(Path(sys.executable).with_name("snakemake"))
    result = subprocess.run([snakemake, "--cores", "1", "-n", "-p", "--nolock", "--configfile", "config/wikitext.yaml",
                             str(overlay_file), "--until", "chunk_articles"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    plan = result.stdout + result.stderr
    assert "rule fetch_data:" in plan and "rule chunk_articles:" in plan
    assert "Salesforce/wikitext" in plan and WIKI_PARQUET in plan
    assert f"--input {data_dir / 'wikitext-2' / 'valid.txt'} " in plan
    assert "shared/data" not in plan


@pytest.mark.slow
def test_local_source_on_a_copy_of_the_files_runs_the_data_steps(tmp_path):
    """fetch_data then ingest_dialogues for real on a copy of the (demo) files; the copy is read in place."""
    from workflow_api import run

    copy = tmp_path / "my-data"
    copy.mkdir()
    for name in ("dialogues_train.jsonl", "dialogues_val.jsonl"):
        shutil.copy(DEMO / name, copy / name)
    results = tmp_path / "results"
    run(REPO, [overlay(tmp_path, results, copy)], targets=[str(results / "summary" / "dialogues" / "stats.json")],
        cores=1)
    manifest = json.loads((tmp_path / "resources-data" / "demo" / "manifest.json").read_text())
    assert manifest["files"]["train"]["sha256"] == sha(copy / "dialogues_train.jsonl")
    assert (results / "summary" / "dialogues" / "train.jsonl").is_file()
    assert sorted(p.name for p in (tmp_path / "resources-data" / "demo").iterdir()) == ["manifest.json"]
