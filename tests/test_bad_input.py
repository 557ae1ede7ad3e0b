"""Bad input, as a new user's own files bring it: every case exits 2 with ONE line naming the file and the line
or field and what to do, and leaves no output behind (issue 11).

Each case writes its inputs under ``tmp_path/in``, runs one ``vecflow`` command with outputs under
``tmp_path/out`` and checks: exit status 2, stderr is exactly one line, that line matches the expected message,
and ``tmp_path/out`` does not exist afterwards. Config cases run ``snakemake -n`` on a workdir and check that the
message is one line, that the schema is never printed and that no ``results/`` folder appears.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from vecflow.cli import main as cli_main
from vecflow.core.io import save_tensors

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- inputs


def dialogue(i: int) -> dict:
    return {"id": f"d{i}", "dialogue": f"#Person1#: Hello {i}.\n#Person2#: Hi.", "summary": f"#Person1# greets {i}."}


def jsonl_bytes(rows: list) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def unit_rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


SEED003 = "Summarize the following text:\n\n{text}\n\nSummary:"


def synthesis_row(index: int = 0, template: str = SEED003, **extra) -> dict:
    """A row in exactly the seed-003 layout."""
    return {"task_type": "summary", "input_prompt_template": template, "embedding_index": index,
            "target_text": "#Person1# greets.", "variation": 0, "temperature": 0.7, "top_p": 0.9,
            "token_count": 5, **extra}


# ---------------------------------------------------------------------------------------------- commands


def ingest(tmp: Path, train: bytes, val: bytes | None = None) -> list[str]:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "train.jsonl").write_bytes(train)
    (inp / "val.jsonl").write_bytes(val if val is not None else jsonl_bytes([dialogue(100)]))
    return ["ingest-dialogues", "--split", f"train={inp / 'train.jsonl'}", "--split", f"val={inp / 'val.jsonl'}",
            "--settings", "{}", "--out-dir", str(tmp / "out"), "--stats", str(tmp / "out" / "stats.json")]


def filter_cmd(tmp: Path, rows: bytes, embeddings: np.ndarray | bytes | None = None) -> list[str]:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "train_synthesis.jsonl").write_bytes(rows)
    if isinstance(embeddings, bytes):
        (inp / "train_embeddings.safetensors").write_bytes(embeddings)
    else:
        save_tensors(inp / "train_embeddings.safetensors",
                     {"embeddings": unit_rows(3) if embeddings is None else embeddings})
    return ["filter-summary", "--in-dir", str(inp), "--splits", "train", "--settings", "{}",
            "--out-dir", str(tmp / "out"), "--stats", str(tmp / "out" / "stats.json")]


def windows_cmd(tmp: Path, vectors: np.ndarray, metadata: dict | None = None,
                encoder_dim: int | None = None) -> list[str]:
    """``vecflow windows`` on a bank of ``vectors`` (with safetensors ``metadata``); with ``encoder_dim``, also
    ``--encoder`` naming a folder ``in/minilm`` whose config.json says hidden_size ``encoder_dim``."""
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    save_tensors(inp / "e.safetensors", {"embeddings": vectors}, metadata=metadata)
    rows = [{"article_id": 0, "chunk_index": i, "text": f"chunk {i}"} for i in range(len(vectors))]
    (inp / "e.index.jsonl").write_bytes(jsonl_bytes(rows))
    extra = []
    if encoder_dim is not None:
        (inp / "minilm").mkdir()
        (inp / "minilm" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": encoder_dim}))
        extra = ["--encoder", str(inp / "minilm")]
    return ["windows", "--embeddings", str(inp / "e.safetensors"), "--index", str(inp / "e.index.jsonl"),
            "--settings", json.dumps({"context_length": 2}), *extra, "--out", str(tmp / "out" / "w.safetensors")]


def chunk_cmd(tmp: Path, text: bytes, min_tokens: int = 8, target_tokens: int = 40) -> list[str]:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "wiki.txt").write_bytes(text)
    settings = {"chunking": {"target_tokens": target_tokens, "min_tokens": min_tokens}}
    return ["chunk-articles", "--input", str(inp / "wiki.txt"), "--format", "wikitext", "--settings",
            json.dumps(settings), "--out", str(tmp / "out" / "chunks.jsonl")]


WIKI = " = Robert Boulter = \n\n Robert Boulter is an English film , television and theatre actor . \n"


def diagnose_cmd(tmp: Path, kind: str) -> list[str]:
    """diagnose with waive_gate on: a bank with a NaN row (``nan-bank``), windows in the old float layout
    (``old-windows``) or windows pointing past the bank (``outside``)."""
    from vecflow.lvm.bank import load_bank
    from vecflow.lvm.windows import make_windows, save_windows

    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    vectors = unit_rows(6)
    save_tensors(inp / "e.safetensors", {"embeddings": vectors})
    rows = [{"article_id": 0, "chunk_index": i, "text": f"chunk {i}"} for i in range(6)]
    (inp / "e.index.jsonl").write_bytes(jsonl_bytes(rows))
    bank = load_bank(inp / "e.safetensors", inp / "e.index.jsonl")
    windows = make_windows(bank, 3)
    save_windows(inp / "w.safetensors", windows, bank)
    if kind == "nan-bank":
        vectors[4, 0] = float("nan")
        save_tensors(inp / "e.safetensors", {"embeddings": vectors})
    elif kind == "old-windows":
        save_tensors(inp / "w.safetensors", {"contexts": vectors[windows.context_rows],
                                             "targets": vectors[windows.target_rows],
                                             "article_ids": windows.article_ids, "target_indices": windows.target_indices})
    elif kind == "outside":
        save_tensors(inp / "w.safetensors", {"rows": windows.rows + 3, "article_ids": windows.article_ids,
                                             "target_indices": windows.target_indices})
    return ["diagnose", "--windows", str(inp / "w.safetensors"), "--embeddings", str(inp / "e.safetensors"),
            "--index", str(inp / "e.index.jsonl"), "--settings", json.dumps({"waive_gate": True}),
            "--out-json", str(tmp / "out" / "d.json"), "--out-plot", str(tmp / "out" / "d.png")]


FIVECAT = {"model": {"val": {"c0": 0.6, "margin": 0.1}}}
SCORES = {"rouge": {"rouge1": {"f": 0.3}}, "bertscore": {"f1": 0.8},
          "input_dependence": {"distinct_ratio": 1.0, "own_rouge1": 0.3, "shuffled_rouge1": 0.1, "margin": 0.2,
                               "n": 4}}
GATES = {"lvm": {"min_c0": 0.0}, "summarizer": {"min_rouge1": 0.0}}


def decide_cmd(tmp: Path, scores: bytes | None = None, fivecat: bytes | None = None, extra=(), **settings) -> list:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "fivecat.json").write_bytes(fivecat if fivecat is not None else json.dumps(FIVECAT).encode())
    (inp / "scores.json").write_bytes(scores if scores is not None else json.dumps(SCORES).encode())
    return ["deploy", "decide", "--settings", json.dumps({"name": "x", "gates": GATES, **settings}),
            "--fivecat", str(inp / "fivecat.json"), "--scores", f"seq2seq={inp / 'scores.json'}", *extra,
            "--out", str(tmp / "out" / "decision.json")]


def bundle_cmd(tmp: Path, decision: dict) -> list[str]:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "decision.json").write_text(json.dumps(decision))
    return ["deploy", "bundle", "--decision", str(inp / "decision.json"), "--settings", "{}", "--lvm", str(inp),
            "--encoder", str(inp), "--bank-embeddings", str(inp / "b.safetensors"), "--bank-index",
            str(inp / "b.jsonl"), "--summarizer", str(inp), "--metrics", str(inp / "decision.json"),
            "--out", str(tmp / "out" / "bundle")]


def score_cmd(tmp: Path, predictions: list[dict]) -> list[str]:
    """``vecflow score`` on ``predictions`` for an eval split of three dialogues d0, d1, d2."""
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "val.jsonl").write_bytes(jsonl_bytes([dialogue(i) for i in range(3)]))
    (inp / "preds.jsonl").write_bytes(jsonl_bytes(predictions))
    return ["score", "--predictions", str(inp / "preds.jsonl"), "--eval-split", str(inp / "val.jsonl"),
            "--bertscore-model", str(inp), "--settings", "{}", "--out-scores", str(tmp / "out" / "scores.json"),
            "--out-examples", str(tmp / "out" / "examples.json")]


def score_families_cmd(tmp: Path, families: dict[str, list[dict]]) -> list[str]:
    """``vecflow score`` on several families (``--family NAME PREDICTIONS EVAL_SPLIT`` each), outputs under
    ``tmp/out``; every family's predictions are for the eval split of d0, d1, d2."""
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    (inp / "val.jsonl").write_bytes(jsonl_bytes([dialogue(i) for i in range(3)]))
    argv = ["score"]
    for name, predictions in families.items():
        (inp / f"{name}.jsonl").write_bytes(jsonl_bytes(predictions))
        argv += ["--family", name, str(inp / f"{name}.jsonl"), str(inp / "val.jsonl")]
    return argv + ["--out-dir", str(tmp / "out"), "--bertscore-model", str(inp), "--settings", "{}"]


def prediction(i: int, references_of: int | None = None, id_: str | None = None) -> dict:
    return {"id": id_ or f"d{i}", "prediction": f"#Person1# greets {i}.",
            "references": dialogue(i if references_of is None else references_of)["summary"].split("\n")}


def embed_cmd(tmp: Path) -> list[str]:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)
    return ["embed", "--chunks", str(inp / "no-such-chunks.jsonl"), "--encoder", str(inp), "--settings", "{}",
            "--out-dir", str(tmp / "out")]


def chunk_folder_cmd(tmp: Path) -> list[str]:
    (tmp / "in" / "articles").mkdir(parents=True, exist_ok=True)
    return ["chunk-articles", "--input", str(tmp / "in" / "articles"), "--format", "wikitext", "--settings", "{}",
            "--out", str(tmp / "out" / "chunks.jsonl")]


LATIN1 = '{"id": "d1", "dialogue": "#Person1#: Caf\u00e9 ?", "summary": "s"}\n'.encode("latin-1")

# (id, command builder, expected message regex)
CASES = [
    # ---- dialogues: encodings and JSON syntax
    ("latin1-jsonl", lambda t: ingest(t, jsonl_bytes([dialogue(0)]) + LATIN1),
     r"train\.jsonl:2: not UTF-8 \(byte 0xe9 at byte offset \d+\); re-encode it as UTF-8"),
    ("binary-file", lambda t: ingest(t, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
     r"train\.jsonl:\d: NUL byte at byte offset \d+: this is a binary file, not UTF-8 text"),
    ("gzip-file", lambda t: ingest(t, b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"),
     r"train\.jsonl:1: NUL byte at byte offset 3: this is a binary file"),
    ("truncated-line", lambda t: ingest(t, jsonl_bytes([dialogue(0)]) + b'{"id": "d1", "dialogue": "#Pers'),
     r"train\.jsonl:2: invalid JSON: the line is truncated .*; complete or remove the line"),
    ("python-dict-line", lambda t: ingest(t, b"{'id': 'd0', 'dialogue': 'x', 'summary': 'y'}\n"),
     r"train\.jsonl:1: invalid JSON at column 2: .*looks like a Python dict; write JSON with double quotes"),
    ("array-line", lambda t: ingest(t, b'["d0", "dialogue"]\n'),
     r"train\.jsonl:1: expected a JSON object, got list"),
    ("missing-comma", lambda t: ingest(t, b'{"id": "d0" "dialogue": "x"}\n'),
     r"train\.jsonl:1: invalid JSON at column 13: Expecting ',' delimiter; each line must be one complete"),
    ("nested-100000-deep", lambda t: ingest(t, b'{"id": "d0", "dialogue": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"),
     r"train\.jsonl:1: JSON nested too deeply to read .*write plain objects"),
    ("key-given-twice", lambda t: ingest(t, jsonl_bytes([dialogue(0)]) + b'{"id": "d1", "dialogue": "#Person1#: hi",'
                                            b' "summary": "a", "summary": "b"}\n'),
     r"train\.jsonl:2: key 'summary' is given twice in one JSON object .*remove one of them"),
    # ---- dialogues: content
    ("duplicate-id", lambda t: ingest(t, jsonl_bytes([dialogue(0), dialogue(0)])),
     r"train\.jsonl:2: field 'id': duplicate id 'd0' \(first at line 1\)"),
    ("empty-dialogue", lambda t: ingest(t, jsonl_bytes([{**dialogue(0), "dialogue": "  "}])),
     r"train\.jsonl:1: field 'dialogue': empty"),
    ("missing-summary", lambda t: ingest(t, jsonl_bytes([{"id": "d0", "dialogue": "#Person1#: hi"}])),
     r"train\.jsonl:1: field 'summary': missing"),
    ("number-summary", lambda t: ingest(t, jsonl_bytes([{**dialogue(0), "summary": 3}])),
     r"train\.jsonl:1: field 'summary': expected str, got int"),
    ("empty-file", lambda t: ingest(t, b""), r"train\.jsonl: no dialogues in file"),
    ("id-in-two-splits", lambda t: ingest(t, jsonl_bytes([dialogue(0)]), jsonl_bytes([dialogue(0)])),
     r"id 'd0' is in two splits: .*train\.jsonl:1 \(train\) and .*val\.jsonl:1 \(val\)"),
    ("latin1-val-split", lambda t: ingest(t, jsonl_bytes([dialogue(0)]), LATIN1),
     r"val\.jsonl:1: not UTF-8 \(byte 0xe9 at byte offset 40\)"),
    # ---- filter-summary (seed-003 synthesis files)
    ("template-without-placeholder", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row(template="Summarize:")])),
     r"train_synthesis\.jsonl:1: field 'input_prompt_template': needs exactly one placeholder '<EMB>' or "
     r"'\{text\}' \(found none\)"),
    ("two-placeholders", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row(template="{text} <EMB>")])),
     r"train_synthesis\.jsonl:1: field 'input_prompt_template': needs exactly one .*\(found 2\)"),
    ("index-out-of-range", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row(index=7)])),
     r"train_synthesis\.jsonl:1: field 'embedding_index': 7 is out of range \(the embeddings have 3 rows\)"),
    ("string-temperature", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row(temperature="hot")])),
     r"train_synthesis\.jsonl:1: field 'temperature': expected int or float, got str"),
    ("nan-embeddings", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row()]), np.full((3, 8), np.nan, np.float32)),
     r"train_embeddings\.safetensors: tensor 'embeddings': row 0 is not finite .*the file is corrupt"),
    ("not-safetensors", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row()]), b"not a tensor file at all"),
     r"train_embeddings\.safetensors: not a readable safetensors file"),
    ("latin1-synthesis", lambda t: filter_cmd(t, jsonl_bytes([synthesis_row()]) + LATIN1),
     r"train_synthesis\.jsonl:2: not UTF-8"),
    # ---- WikiText articles
    ("chunk-articles-given-a-folder", chunk_folder_cmd, r"in/articles: is a folder, expected a file"),
    ("embed-missing-chunks", embed_cmd, r"no-such-chunks\.jsonl: file not found"),
    ("wikitext-not-utf8", lambda t: chunk_cmd(t, WIKI.encode() + " Caf\u00e9 society .\n".encode("cp1252")),
     r"wiki\.txt:4: not UTF-8 \(byte 0xe9 at byte offset \d+\); re-encode it as UTF-8"),
    ("wikitext-articles-too-short", lambda t: chunk_cmd(t, WIKI.encode(), min_tokens=50, target_tokens=60),
     r"wiki\.txt: 1 articles found but no chunk of at least min_tokens 50 words \(the longest article has 10\); "
     r"lower lvm\.chunking\.min_tokens"),
    # ---- LVM embeddings
    ("nan-chunk-embeddings", lambda t: windows_cmd(t, np.vstack([unit_rows(3), np.full((1, 8), np.nan, np.float32)])),
     r"e\.safetensors: row 3 is not finite"),
    ("unnormalised-chunk-embeddings", lambda t: windows_cmd(t, unit_rows(4) * 3),
     r"e\.safetensors: row 0 has norm 3\.0000, not 1"),
    ("bank-width-not-the-encoders", lambda t: windows_cmd(t, unit_rows(4), encoder_dim=16),
     r"e\.safetensors: the bank has rows of dimension 8 but the config names encoder 'minilm' \(.*minilm, D=16\); "
     r"re-run vecflow embed with encoder .*minilm, or set encoder: in the config to the one the bank was made with$"),
    ("bank-of-another-encoder", lambda t: windows_cmd(t, unit_rows(4), {"encoder": "mpnet", "dim": "8"}, 8),
     r"e\.safetensors: the bank was made with encoder 'mpnet' \(D=8\) but the config names encoder 'minilm' "
     r"\(.*minilm, D=8\); re-run vecflow embed with encoder .*minilm, or set encoder: in the config to the one "
     r"the bank was made with \('mpnet'\)"),
    ("nan-bank-never-waived", lambda t: diagnose_cmd(t, "nan-bank"),
     r"e\.safetensors: row 4 is not finite .*no gate can waive this"),
    ("old-float-windows", lambda t: diagnose_cmd(t, "old-windows"),
     r"w\.safetensors: an old windows file with float vectors .*delete it and rerun the make_windows rule"),
    ("windows-outside-the-bank", lambda t: diagnose_cmd(t, "outside"),
     r"w\.safetensors: window 0: row \[3, 4, 5, 6\] outside .*e\.safetensors \(6 rows\)"),
    # ---- vecflow score: predictions one-to-one with the eval split, each with its own references
    ("score-all-ids-the-same", lambda t: score_cmd(t, [prediction(i, id_="d0") for i in range(3)]),
     r"preds\.jsonl:2: field 'id': duplicate id 'd0' \(first at line 1\)"),
    ("score-references-shifted", lambda t: score_cmd(t, [prediction(i, references_of=(i + 1) % 3) for i in range(3)]),
     r"preds\.jsonl:1: field 'references': id 'd0': not that dialogue's references \(see .*val\.jsonl:1\)"),
    ("score-id-outside-the-split", lambda t: score_cmd(t, [prediction(0), prediction(1), prediction(7)]),
     r"preds\.jsonl:3: field 'id': id 'd7' is not in the eval split"),
    ("score-dialogue-without-prediction", lambda t: score_cmd(t, [prediction(0), prediction(2)]),
     r"val\.jsonl:2: field 'id': id 'd1' has no prediction in .*preds\.jsonl"),
    ("score-one-family-of-several", lambda t: score_families_cmd(t, {"good": [prediction(i) for i in range(3)],
                                                                      "bad": [prediction(0), prediction(2)]}),
     r"val\.jsonl:2: field 'id': id 'd1' has no prediction in .*bad\.jsonl"),
    # ---- deploy decide / bundle
    ("scores-key-given-twice", lambda t: decide_cmd(t, scores=b'{"rouge": {"rouge1": {"f": 0.3}},\n "rouge": 1}'),
     r"scores\.json:2: key 'rouge' is given twice in one JSON object"),
    ("truncated-scores", lambda t: decide_cmd(t, scores=b'{"rouge": {"rouge1": {"f": 0.3'),
     r"scores\.json:1: invalid JSON: the file is truncated .*; write the file again"),
    ("scores-not-utf8", lambda t: decide_cmd(t, scores=b'{"note": "\xe9"}'),
     r"scores\.json:1: not UTF-8 \(byte 0xe9 at byte offset 10\)"),
    ("fivecat-missing-number", lambda t: decide_cmd(t, fivecat=b'{"model": {"val": {"c0": 0.6}}}'),
     r"fivecat\.json: field 'model\.val\.margin': missing"),
    ("scores-unknown-family", lambda t: decide_cmd(t, extra=["--scores", "t5=x.json"]),
     r"--scores 't5=x\.json': family 't5' is not one of seq2seq, causal, elm"),
    ("chosen-family-not-scored", lambda t: decide_cmd(t, summarizer="causal"),
     r"settings: field 'summarizer': 'causal' has no --scores \(given: seq2seq\)"),
    ("unknown-metric", lambda t: decide_cmd(t, summarizer_metric="bleu"),
     r"settings: field 'summarizer_metric': 'bleu' is not one of rouge1"),
    ("bundle-refused-by-gates", lambda t: bundle_cmd(t, {"deploy": False, "failed": ["lvm.val_c0"], "reason": "no"}),
     r"decision\.json: deployment refused by gate\(s\) lvm\.val_c0"),
    ("bundle-decision-without-verdict", lambda t: bundle_cmd(t, {"name": "x"}),
     r"decision\.json: field 'deploy': missing"),
]


@pytest.mark.parametrize("build, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, capsys, build, message):
    argv = build(tmp_path)
    capsys.readouterr()
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").rglob("*"))


def test_accepted_variants_are_not_errors(tmp_path):
    """The other side of the cases above: a UTF-8 BOM and seed-003 '{text}' templates are accepted."""
    bom = tmp_path / "bom"
    bom.mkdir()
    assert cli_main(ingest(bom, b"\xef\xbb\xbf" + jsonl_bytes([dialogue(0), dialogue(1)]))) == 0
    assert (bom / "out" / "train.jsonl").exists()
    seed003 = tmp_path / "seed003"
    seed003.mkdir()
    assert cli_main(filter_cmd(seed003, jsonl_bytes([synthesis_row(0), synthesis_row(2)]))) == 0
    kept = [json.loads(line) for line in (seed003 / "out" / "train_synthesis.jsonl").read_text().splitlines()]
    assert [r["input_prompt_template"] for r in kept] == ["Summarize the following text:\n\n<EMB>\n\nSummary:"] * 2


# ------------------------------------------------------------------------------------------------ config


def config_workdir(tmp_path: Path, tiny_encoder: Path, tiny_causal_lm: Path, text: str | None = None,
                   change=None) -> Path:
    from test_workflow import tiny_config

    config = tiny_config(tiny_encoder, tiny_causal_lm)
    if change:
        change(config)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(text if text is not None else yaml.safe_dump(config))
    return tmp_path


def snakemake_dry_run(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1", "-n",
                           *extra], capture_output=True, text=True, timeout=300)


def _set(path: str, value):
    def change(config):
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


CONFIG_CASES = [
    ("unknown-top-level-key", _set("bogus_key", 1),
     r"config/config\.yaml:\d+: unknown key 'bogus_key' under the top level; remove it or fix its spelling"),
    ("unknown-nested-key", _set("lvm.train.epochz", 3),
     r"config/config\.yaml:\d+: unknown key 'lvm\.train\.epochz' under lvm\.train"),
    ("string-learning-rate", _set("summarizer.learning_rate", "5e-4"),
     r"config/config\.yaml:\d+: key 'summarizer\.learning_rate': expected number, got str '5e-4'; YAML reads "
     r"5e-4 as a string: write 5\.0e-4"),
    ("local-model-missing-path", _set("models.tiny", {"source": "local"}),
     r"config: models\.tiny\.path: missing \(source 'local' needs it\)"),
    ("local-model-path-not-there", _set("models.tiny", {"source": "local", "path": "/nonexistent/model"}),
     r"config: models\.tiny\.path: folder '/nonexistent/model' not found"),
    ("deploy-untrained-family", lambda c: (_set("deploy.summarizer", "elm")(c), _set("tracks.elm", False)(c)),
     r"config: deploy\.summarizer: 'elm' is not trained in this run \(tracks\.elm is false; trained: "),
]


@pytest.mark.parametrize("change, message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_is_one_line_before_any_job(tmp_path, tiny_encoder, tiny_causal_lm, change, message):
    workdir = config_workdir(tmp_path, tiny_encoder, tiny_causal_lm, change=change)
    result = snakemake_dry_run(workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    matching = [line for line in output.splitlines() if re.search(message, line)]
    assert len(matching) == 1, output[-3000:]
    assert "Failed validating" not in output and "$schema" not in output, "the schema must not be printed"
    assert not (workdir / "results").exists()


@pytest.mark.parametrize(
    "text, message",
    [("seed: 1\nlvm: [1,\n  train: 2\n", r"config/config\.yaml:4: invalid YAML: expected ',' or ']'"),
     ("seed: 1\nseed: 2\n", r"config/config\.yaml:2: duplicate key 'seed' \(first at line 1\)"),
     ("lvm:\n  runs: {}\n  runs: {p1: {preset: P1}}\n", r"config/config\.yaml:3: duplicate key 'runs'")],
    ids=["invalid-yaml", "duplicate-top-level-key", "duplicate-nested-key"],
)
def test_bad_yaml_names_file_and_line(tmp_path, tiny_encoder, tiny_causal_lm, text, message):
    workdir = config_workdir(tmp_path, tiny_encoder, tiny_causal_lm, text=text)
    result = snakemake_dry_run(workdir)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert len([line for line in output.splitlines() if re.search(message, line)]) == 1, output[-3000:]
    assert not (workdir / "results").exists()


def test_the_default_config_given_again_is_one_source(tmp_path, tiny_encoder, tiny_causal_lm):
    """`make demo` used to pass --configfile config/config.yaml on top of the default: one source, not two."""
    from vecflow.core.config_checks import config_sources, merge_order

    workdir = config_workdir(tmp_path, tiny_encoder, tiny_causal_lm)
    default = workdir / "config" / "config.yaml"
    assert merge_order([str(default), str(default)], str(default)) == [str(default)]
    assert len(config_sources(merge_order([str(default)], str(default)))) == 1
    makefile = (REPO / "Makefile").read_text()
    demo = makefile.split("\ndemo:")[1].split("\n\n")[0]
    assert "--configfile" not in demo


# ------------------------------------------------------------------------------------------------ server


def test_a_body_that_is_not_declared_json_is_415_naming_the_content_type(tmp_path_factory, tiny_encoder):
    """The server's bad input: a text/plain (or form) body gets 415 saying to send application/json, not a
    422 about dictionaries; JSON with parameters or a +json type is still JSON."""
    from fastapi.testclient import TestClient

    from test_serve import build_test_bundle
    from vecflow.ship.serve import create_app

    bundle = build_test_bundle(tmp_path_factory.mktemp("bad-input-serve"), tiny_encoder, tiny_causal_lm=None)
    with TestClient(create_app(bundle, device="cpu")) as client:
        for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]:
            response = client.post("/encode", content=b'{"texts": ["hello"]}', headers={"content-type": content_type})
            assert response.status_code == 415, (content_type, response.text)
            assert response.json() == {"detail": "Content-Type must be application/json: send the body as JSON "
                                                 "with the header 'Content-Type: application/json'"}
        for content_type in ["application/json; charset=utf-8", "Application/JSON", "application/vnd.api+json"]:
            response = client.post("/encode", content=b'{"texts": ["hello"]}', headers={"content-type": content_type})
            assert response.status_code == 200, (content_type, response.text)
