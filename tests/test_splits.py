import json

import pytest

from vecflow.cli import main as cli_main
from vecflow.core.errors import VecflowError
from vecflow.data.settings import SplitSettings
from vecflow.data.splits import assign_articles, parse_ranges, read_chunks, split_chunks

FRACTIONS = {"method": "fractions", "fractions": {"train": 0.6, "val": 0.2, "ood": 0.2}}


def split(cfg: dict) -> SplitSettings:
    return SplitSettings.parse(cfg)


def make_rows(n_articles=10, chunks_per_article=3):
    return [
        {"article_id": a, "title": f"T{a}", "chunk_index": c, "text": f"article {a} chunk {c}"}
        for a in range(n_articles)
        for c in range(chunks_per_article)
    ]


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(chunks, out_dir, split_cfg, seed=7):
    settings = json.dumps({"seed": seed, "device": "cpu", **split_cfg})
    return cli_main(["split-articles", "--chunks", str(chunks), "--settings", settings, "--out-dir", str(out_dir)])


def test_fractions_are_seeded_disjoint_and_cover_all_articles():
    ids = list(range(20))
    first = assign_articles(ids, split(FRACTIONS), seed=3)
    assert first == assign_articles(ids, split(FRACTIONS), seed=3)
    assert first != assign_articles(ids, split(FRACTIONS), seed=4)
    assert [len(first[s]) for s in ("train", "val", "ood")] == [12, 4, 4]
    assert sorted(first["train"] + first["val"] + first["ood"]) == ids


def test_ranges_assign_inclusive_ids_and_leave_others_out():
    cfg = {"method": "ranges", "ranges": {"train": [[0, 3], [8, 9]], "val": [[4, 5]], "ood": [[6, 6]]}}
    assigned = assign_articles(list(range(10)), split(cfg), seed=0)
    assert assigned == {"train": [0, 1, 2, 3, 8, 9], "val": [4, 5], "ood": [6]}


def test_overlapping_ranges_name_both_splits():
    with pytest.raises(VecflowError, match=r"train \[1, 1499\] overlaps ood \[1000, 1999\]"):
        parse_ranges({"train": [[1, 1499]], "val": [[4000, 4499]], "ood": [[1000, 1999]]})


def test_bad_range_shape_and_empty_split_are_errors():
    with pytest.raises(VecflowError, match=r"split.ranges.val\[0\]: expected \[low, high\]"):
        parse_ranges({"train": [[0, 1]], "val": [[5, 2]], "ood": [[9, 9]]})
    cfg = {"method": "ranges", "ranges": {"train": [[0, 5]], "val": [[6, 7]], "ood": [[100, 200]]}}
    with pytest.raises(VecflowError, match="ood would have 0 articles"):
        assign_articles(list(range(10)), split(cfg), seed=0)
    message = r"val, ood would have 0 articles \(of 3 articles; sizes train=3, val=0, ood=0\)"
    with pytest.raises(VecflowError, match=message):
        assign_articles([0, 1, 2], split({"fractions": {"train": 0.9, "val": 0.05, "ood": 0.05}}), seed=0)
    with pytest.raises(VecflowError, match="settings: field 'method': 'random' is not one of fractions, ranges"):
        split({"method": "random"})
    with pytest.raises(VecflowError, match="settings: unknown key 'split'"):  # lvm.split itself, not nested
        split({"split": FRACTIONS})


def test_cli_writes_splits_ids_and_leakage_report(tmp_path):
    chunks = write_rows(tmp_path / "chunks.jsonl", make_rows(10, 3))
    assert run_cli(chunks, tmp_path / "splits", FRACTIONS) == 0
    ids = json.loads((tmp_path / "splits" / "ids.json").read_text())
    leakage = json.loads((tmp_path / "splits" / "leakage.json").read_text())
    assert set(ids["train"]).isdisjoint(ids["val"]) and set(ids["val"]).isdisjoint(ids["ood"])
    for name in ("train", "val", "ood"):
        rows = [json.loads(line) for line in (tmp_path / "splits" / f"{name}.jsonl").read_text().splitlines()]
        assert sorted({r["article_id"] for r in rows}) == ids[name]
        assert len(rows) == 3 * len(ids[name])
        assert leakage["counts"][name] == {"articles": len(ids[name]), "chunks": len(rows)}
    assert leakage["article_ids_in_two_splits"] == []
    assert leakage["duplicate_chunk_texts"]["count"] == 0


def test_duplicate_chunk_text_across_splits_fails_and_writes_nothing(tmp_path, capsys):
    rows = make_rows(10, 3)
    for row in rows:
        if row["chunk_index"] == 2:
            row["text"] = "See also  the references."  # the same boilerplate in every article
    chunks = write_rows(tmp_path / "chunks.jsonl", rows)
    assert run_cli(chunks, tmp_path / "splits", FRACTIONS) == 2
    err = capsys.readouterr().err
    assert "split leaks: 1 identical chunk texts in two splits" in err and "drop_duplicate_chunks" in err
    assert not (tmp_path / "splits").exists()


def test_drop_duplicate_chunks_drops_from_later_splits_and_reports():
    rows = make_rows(10, 3)
    for row in rows:
        if row["chunk_index"] == 2:
            row["text"] = "see also the   references."
    split_rows, ids, report = split_chunks(rows, split({**FRACTIONS, "drop_duplicate_chunks": True}), seed=1)
    assert report["duplicate_chunk_texts"]["count"] == 1
    assert report["duplicate_chunk_texts"]["dropped"] == {"train": 0, "val": 2, "ood": 2}
    assert sum(r["chunk_index"] == 2 for r in split_rows["train"]) == 6
    assert not any(r["chunk_index"] == 2 for r in split_rows["val"] + split_rows["ood"])


def test_read_chunks_validates_fields_and_order(tmp_path):
    rows = make_rows(2, 2)
    del rows[1]["text"]
    with pytest.raises(VecflowError, match=r"c.jsonl:2: field 'text': missing"):
        read_chunks(write_rows(tmp_path / "c.jsonl", rows))
    rows = make_rows(2, 2)
    rows[1], rows[2] = rows[2], rows[1]
    with pytest.raises(VecflowError, match=r"c.jsonl:3: chunk \(article 0, chunk 1\) is out of order"):
        read_chunks(write_rows(tmp_path / "c.jsonl", rows))


def test_cli_overlapping_ranges_exit_2(tmp_path, capsys):
    chunks = write_rows(tmp_path / "chunks.jsonl", make_rows(10, 2))
    cfg = {"method": "ranges", "ranges": {"train": [[0, 5]], "val": [[5, 7]], "ood": [[8, 9]]}}
    assert run_cli(chunks, tmp_path / "splits", cfg) == 2
    assert "train [0, 5] overlaps val [5, 7]" in capsys.readouterr().err
    assert not (tmp_path / "splits").exists()


def test_cli_accepts_the_split_section_itself(tmp_path):
    # the rule passes lvm.split flat (plus seed/device)
    chunks = write_rows(tmp_path / "chunks.jsonl", make_rows(6, 2))
    settings = {"seed": 7, "device": "cpu", "method": "ranges", "ranges": {"train": [[0, 3]], "val": [[4, 4]],
                                                                          "ood": [[5, 5]]}}
    argv = ["split-articles", "--chunks", str(chunks), "--settings", json.dumps(settings)]
    assert cli_main(argv + ["--out-dir", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "ids.json").read_text()) == {"train": [0, 1, 2, 3], "val": [4], "ood": [5]}


def test_pinned_ranges_go_first_and_the_rest_by_fractions():
    ids = list(range(20)) + list(range(1000, 1005))
    cfg = {"method": "fractions", "fractions": {"train": 0.8, "val": 0.2, "ood": 0.0},
           "pinned": {"ood": [[1000, 1999]]}}
    assigned = assign_articles(ids, split(cfg), seed=3)
    assert assigned["ood"] == list(range(1000, 1005))
    assert len(assigned["val"]) == 4 and len(assigned["train"]) == 16
    assert sorted(assigned["train"] + assigned["val"]) == list(range(20))
    with pytest.raises(VecflowError, match="pinned: only used with method fractions"):
        assign_articles(ids, split({"method": "ranges", "ranges": {}, "pinned": {"ood": [[1000, 1999]]}}), seed=3)


def _dialogue_rows(turns_by_article):
    return [{"article_id": a, "title": str(a), "chunk_index": c, "text": t}
            for a, turns in turns_by_article.items() for c, t in enumerate(turns)]


def test_short_duplicates_are_generic_and_long_ones_drop_whole_articles():
    turns = {a: [f"#Person1#: dialogue {a} opens with a long and unique sentence here.", "#Person2#: Thanks."]
             for a in range(6)}
    turns[5] = [turns[0][0], "#Person2#: Something new and long enough to count as text."]  # a copy of 0's turn
    cfg = {"method": "ranges", "ranges": {"train": [[0, 3]], "val": [[4, 4]], "ood": [[5, 5]]},
           "short_duplicate_tokens": 3}
    with pytest.raises(VecflowError, match="1 identical chunk texts in two splits"):
        split_chunks(_dialogue_rows(turns), split(cfg), seed=0)
    split_rows, _, report = split_chunks(_dialogue_rows({**turns, 6: ["x y z w v u"]}),
                                         split({**cfg, "ranges": {**cfg["ranges"], "ood": [[5, 6]]},
                                                "drop_leaking_articles": True}), seed=0)
    assert {r["article_id"] for r in split_rows["ood"]} == {6}  # article 5 dropped whole, not a gap
    assert report["duplicate_chunk_texts"]["dropped_articles"] == {"train": 0, "val": 0, "ood": 1}
    assert report["short_duplicate_texts"]["count"] == 1  # "#Person2#: Thanks." is allowed


def test_dropping_duplicate_chunks_keeps_generic_short_ones():
    turns = {a: [f"#Person1#: dialogue {a} opens with a long and unique sentence here.", "#Person2#: Thanks."]
             for a in range(3)}
    turns[2][0] = turns[0][0]
    cfg = {"method": "ranges", "ranges": {"train": [[0, 0]], "val": [[1, 1]], "ood": [[2, 2]]},
           "short_duplicate_tokens": 3, "drop_duplicate_chunks": True}
    split_rows, _, report = split_chunks(_dialogue_rows(turns), split(cfg), seed=0)
    assert [r["text"] for r in split_rows["ood"]] == ["#Person2#: Thanks."]
    assert report["duplicate_chunk_texts"]["dropped"] == {"train": 0, "val": 0, "ood": 1}
