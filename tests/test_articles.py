import json

import pytest

from vecflow.data.articles import (
    OOD_ID_OFFSET,
    chunk_articles,
    detokenize_wikitext,
    main,
    pack_sentences,
    read_jsonl_articles,
    read_articles,
    read_pydoc_topics,
    read_wikitext,
    split_sentences,
    split_turns,
    turn_rows,
)
from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError

WIKITEXT = """ 
 = First Article = 
 
 The lobster is 60 cm ( 24 in ) long . It weighs 1 @,@ 200 g , and lives in the North @-@ East Atlantic . 
 
 = = Description = = 
 
 It has a " hard " shell . Its price is 2 @.@ 5 pounds . 
 
 = = = Deeper = = = 
 Fishermen don 't like storms . 
 = Second Article = 
 
 A short text with enough words to make one chunk of its own here . 
"""

SETTINGS = {"seed": 1, "device": "cpu", "chunking": {"target_tokens": 12, "min_tokens": 3}}


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_detokenize_wikitext_undoes_number_and_punctuation_tokens():
    text = ' It weighs 1 @,@ 200 g ( 2 @.@ 6 lb ) , in the North @-@ East ; a " red " one isn \'t rare . '
    assert detokenize_wikitext(text) == 'It weighs 1,200 g (2.6 lb), in the North-East; a "red" one isn\'t rare.'


def test_split_sentences_keeps_abbreviated_lowercase_words_together():
    text = 'It is related to H. americanus. Mating occurs in summer! Does it? "Yes." 60 cm.'
    assert split_sentences(text) == [
        "It is related to H. americanus.",
        "Mating occurs in summer!",
        "Does it?",
        '"Yes."',
        "60 cm.",
    ]


def test_split_sentences_is_one_splitter_for_chunks_and_rouge():
    """Lower-case text (an uncased model's summaries) splits too; abbreviations and line breaks as in prose."""
    from vecflow.summary import scoring

    assert scoring.split_sentences is split_sentences
    assert split_sentences("#person1# asks why. #person2# says no! is it? yes.") == [
        "#person1# asks why.", "#person2# says no!", "is it?", "yes."]
    assert split_sentences("Dr. Smith met e.g. the U.S. team at 5 p.m. today. Then left.\nNext line") == [
        "Dr. Smith met e.g. the U.S. team at 5 p.m. today.", "Then left.", "Next line"]
    assert split_sentences("Wait... what?") == ["Wait...", "what?"]


def test_pack_sentences_targets_size_and_merges_tiny_pieces():
    sentences = ["one two three four five.", "six seven eight nine ten.", "Tail."]
    assert pack_sentences(sentences, target_tokens=6, min_tokens=2) == [
        "one two three four five.",
        "six seven eight nine ten. Tail.",
    ]
    # a tiny sentence in the middle is joined to the next one instead of becoming its own chunk
    assert pack_sentences(["Hi.", "a b c d e f."], target_tokens=4, min_tokens=2) == ["Hi. a b c d", "e f."]
    # a long sentence is cut into pieces of target_tokens words
    assert pack_sentences([" ".join(str(i) for i in range(10))], 4, 1) == ["0 1 2 3", "4 5 6 7", "8 9"]
    assert pack_sentences(["tiny."], target_tokens=10, min_tokens=3) == []


def test_read_wikitext_keeps_subsections_inside_article_but_drops_headings(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(WIKITEXT)
    articles = read_wikitext(path)
    assert [(a[0], a[1]) for a in articles] == [(0, "First Article"), (1, "Second Article")]
    text = " ".join(articles[0][2])
    assert "Description" not in text and "Deeper" not in text and "=" not in text
    assert "1,200 g" in text and "North-East" in text and '"hard"' in text and "don't" in text


def test_chunk_articles_ids_order_and_max_articles(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text(WIKITEXT)
    rows = chunk_articles(read_wikitext(path), target_tokens=12, min_tokens=3)
    keys = [(r["article_id"], r["chunk_index"]) for r in rows]
    assert keys == sorted(keys) and keys[0] == (0, 0)
    assert {r["article_id"] for r in rows} == {0, 1}
    assert all(len(r["text"].split()) <= 12 + 3 for r in rows)
    one = chunk_articles(read_wikitext(path), target_tokens=12, min_tokens=3, max_articles=1)
    assert {r["article_id"] for r in one} == {0}


def test_chunk_articles_rejects_bad_sizes():
    with pytest.raises(VecflowError, match="min_tokens"):
        chunk_articles([], target_tokens=5, min_tokens=9)


def test_pydoc_topics_are_sorted_and_short_ones_skipped():
    articles = read_pydoc_topics(min_words=50)
    assert len(articles) > 20
    assert [a[0] for a in articles] == list(range(len(articles)))
    assert all(len(" ".join(a[2]).split()) >= 50 for a in articles)
    paragraph_sets = [set(a[2]) for a in articles]
    # sections repeated across topics (e.g. "compound" contains "while") are kept only in the first one
    assert sum(len(ps) for ps in paragraph_sets) == len(set().union(*paragraph_sets))
    titles = [a[1] for a in articles]
    assert "Identifiers (Names)" in titles  # the title line above its "*****" underline
    assert not any(p.startswith("***") for a in articles for p in a[2])


def test_jsonl_articles_sorted_by_id(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        json.dumps({"article_id": 7, "title": "B", "text": "Second one here.\n\nNew paragraph."}) + "\n"
        + json.dumps({"article_id": 3, "title": "A", "text": "First one."}) + "\n"
    )
    articles = read_jsonl_articles(path)
    assert [(a[0], a[1]) for a in articles] == [(3, "A"), (7, "B")]
    assert articles[1][2] == ["Second one here.", "New paragraph."]


@pytest.mark.parametrize(
    "line, message",
    [
        ({"article_id": 1, "title": "x"}, r"a.jsonl:2: field 'text': missing"),
        ({"article_id": "1", "title": "x", "text": "y"}, r"a.jsonl:2: field 'article_id': expected int"),
        ({"article_id": 0, "title": "x", "text": "y"}, r"a.jsonl:2: field 'article_id': 0 already used on line 1"),
    ],
)
def test_jsonl_articles_bad_input_names_file_line_field(tmp_path, line, message):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"article_id": 0, "title": "t", "text": "ok."}) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(VecflowError, match=message):
        read_jsonl_articles(path)


def test_cli_wikitext_writes_chunks(tmp_path):
    source, out = tmp_path / "wiki.txt", tmp_path / "out" / "chunks.jsonl"
    source.write_text(WIKITEXT)
    argv = ["chunk-articles", "--input", str(source), "--format", "wikitext", "--settings", json.dumps(SETTINGS)]
    assert cli_main(argv + ["--out", str(out)]) == 0
    rows = _rows(out)
    assert set(rows[0]) == {"article_id", "title", "chunk_index", "text"}
    assert rows[0]["title"] == "First Article" and rows[-1]["title"] == "Second Article"


def test_cli_pydoc_with_max_articles(tmp_path):
    out = tmp_path / "chunks.jsonl"
    settings = {**SETTINGS, "max_articles": 3, "format": "pydoc", "chunking": {"target_tokens": 40, "min_tokens": 8}}
    main(["--input", "pydoc", "--format", "pydoc", "--settings", json.dumps(settings), "--out", str(out)])
    rows = _rows(out)
    assert sorted({r["article_id"] for r in rows}) == [0, 1, 2]
    assert len(rows) > 6


def test_cli_no_articles_is_an_error_naming_the_file(tmp_path, capsys):
    source, out = tmp_path / "plain.txt", tmp_path / "chunks.jsonl"
    source.write_text("just text without any title line\n")
    argv = ["chunk-articles", "--input", str(source), "--format", "wikitext", "--settings", "{}", "--out", str(out)]
    assert cli_main(argv) == 2
    assert f"{source}: no articles found" in capsys.readouterr().err
    assert not out.exists()


def test_cli_missing_input_file(tmp_path, capsys):
    argv = ["chunk-articles", "--input", str(tmp_path / "nope.txt"), "--format", "wikitext", "--settings", "{}"]
    assert cli_main(argv + ["--out", str(tmp_path / "c.jsonl")]) == 2
    assert "nope.txt: file not found" in capsys.readouterr().err


def test_real_wikitext_valid_chunks(shared_data, tmp_path):
    out = tmp_path / "chunks.jsonl"
    settings = {"seed": 1, "chunking": {"target_tokens": 40, "min_tokens": 8}}
    source = shared_data / "wikitext-2" / "valid.txt"
    main(["--input", str(source), "--format", "wikitext", "--settings", json.dumps(settings), "--out", str(out)])
    rows = _rows(out)
    assert len({r["article_id"] for r in rows}) == 60
    assert all(len(r["text"].split()) >= 8 for r in rows)
    assert not any(" @-@ " in r["text"] or " , " in r["text"] for r in rows)


# ------------------------------------------------------------------------------------------ dialogues
def _dialogue_file(path, dialogues, prefix="train"):
    lines = [json.dumps({"fname": f"{prefix}_{i}", "dialogue": d, "summary": "s.", "topic": "t"})
             for i, d in enumerate(dialogues)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_split_turns_keeps_speaker_tags_and_joins_untagged_lines():
    dialogue = "#Person1#: Hi there.\n#Person2#: Hello,\nhow are you?\r\n#Person1#:  Fine,   thanks."
    assert split_turns(dialogue) == ["#Person1#: Hi there.", "#Person2#: Hello, how are you?",
                                     "#Person1#: Fine, thanks."]


def test_cli_dialogues_one_turn_per_chunk_with_ood_ids_offset(tmp_path):
    train = _dialogue_file(tmp_path / "train.jsonl", ["#Person1#: A a.\n#Person2#: B b.\n#Person1#: C c.",
                                                      "#Person1#: D.\n#Person2#: E.", "#Person1#: F."])
    dev = _dialogue_file(tmp_path / "dev.jsonl", ["#Person1#: G.\n#Person2#: H."], prefix="dev")
    out = tmp_path / "chunks.jsonl"
    settings = {**SETTINGS, "max_articles": 2}
    argv = ["chunk-articles", "--input", str(train), "--ood-input", str(dev), "--format", "dialogues",
            "--settings", json.dumps(settings), "--out", str(out)]
    assert cli_main(argv) == 0
    rows = _rows(out)
    # max_articles caps the first file only; the dev dialogue keeps its offset id
    assert [(r["article_id"], r["chunk_index"]) for r in rows] == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (OOD_ID_OFFSET, 0), (OOD_ID_OFFSET, 1)]
    assert rows[1] == {"article_id": 0, "title": "train_0", "chunk_index": 1, "text": "#Person2#: B b."}
    assert rows[-1]["title"] == "dev_0" and rows[-1]["text"] == "#Person2#: H."


def test_dialogues_bad_record_names_file_and_line(tmp_path, capsys):
    source = tmp_path / "d.jsonl"
    source.write_text(json.dumps({"fname": "a", "dialogue": "#Person1#: x", "summary": "s"}) + "\n"
                      + json.dumps({"fname": "b", "summary": "s"}) + "\n")
    argv = ["chunk-articles", "--input", str(source), "--format", "dialogues", "--settings", "{}",
            "--out", str(tmp_path / "c.jsonl")]
    assert cli_main(argv) == 2
    assert f"{source}:2" in capsys.readouterr().err and not (tmp_path / "c.jsonl").exists()


def test_cli_settings_are_lvm_articles_with_chunking_and_a_typo_is_named(tmp_path, capsys):
    # the rule sends lvm.articles flat, lvm.chunking as `chunking`; the whole lvm section is not accepted
    argv = ["chunk-articles", "--input", "pydoc", "--format", "pydoc", "--out", str(tmp_path / "c.jsonl")]
    for settings, message in [({"articles": {"max_articles": 2}}, "settings: unknown key 'articles'"),
                              ({"chunking": {"target_token": 40}}, "settings: unknown key 'chunking.target_token'")]:
        assert cli_main(argv + ["--settings", json.dumps(settings)]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "c.jsonl").exists()


def test_ood_input_needs_the_dialogues_format(tmp_path):
    with pytest.raises(VecflowError, match="ood_input: only the dialogues format"):
        read_articles(str(tmp_path / "a.txt"), "wikitext", ood_source=str(tmp_path / "b.txt"))


def test_real_dialogsum_turns(shared_data):
    articles = read_articles(str(shared_data / "dialogsum" / "dev.jsonl"), "dialogues")
    rows = turn_rows(articles)
    assert len(articles) == 500 and len(rows) > 4000
    assert all(row["text"].startswith("#Person") for row in rows)
