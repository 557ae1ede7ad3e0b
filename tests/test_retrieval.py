"""The retrieval baseline and the neighbours of the retrieval-augmented ELM: exact cosine search on a toy set."""

import json

import numpy as np
import pytest

from test_elm import TEMPLATE
from vecflow.core.errors import VecflowError
from vecflow.core.io import save_tensors
from vecflow.summary import retrieval


def write_split(folder, split, vectors, summaries, ids):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"task_type": "summary", "input_prompt_template": TEMPLATE, "embedding_index": i, "target_text": s,
             "source_id": source} for i, (s, source) in enumerate(zip(summaries, ids))]
    (folder / f"{split}_synthesis.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    save_tensors(folder / f"{split}_embeddings.safetensors",
                 {"embeddings": np.asarray(vectors, dtype=np.float32)})


def unit(*xs):
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_nearest_is_exact_cosine_with_ties_to_the_lower_index_and_self_excluded():
    pool = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 1, 0), unit(1, 1, 0)])
    queries = np.stack([unit(0.9, 0.1, 0), unit(0, 1, 0), unit(1, 1, 0.1)])
    assert retrieval.nearest(pool, queries, 1)[:, 0].tolist() == [0, 1, 3]  # 1 and 2 tie: the lower index
    assert retrieval.nearest(pool, queries, 2).tolist() == [[0, 3], [1, 2], [3, 0]]
    assert retrieval.nearest(pool, queries, 1, exclude=[0, 1, None])[:, 0].tolist() == [3, 2, 3]
    brute = [[int(np.argmax(q @ pool.T))] for q in queries]
    assert retrieval.nearest(pool, queries, 1).tolist() == brute
    with pytest.raises(VecflowError, match="k = 5 needs at least 5 pool entries, there are 4"):
        retrieval.nearest(pool, queries, 5)


def test_predict_retrieval_returns_the_nearest_training_summary(tmp_path):
    data = tmp_path / "filtered"
    write_split(data, "train", [unit(1, 0), unit(0, 1), unit(1, 1)], ["about a", "about b", "about a and b"],
                ["t0", "t1", "t2"])
    # two references for v0 (two rows of one source share its vector)
    write_split(data, "val", [unit(0.2, 1), unit(0.2, 1), unit(1, 0.05)], ["ref b", "ref b2", "ref a"],
                ["v0", "v0", "v1"])
    (data / "val_synthesis.jsonl").write_text((data / "val_synthesis.jsonl").read_text().replace(
        '"embedding_index": 1', '"embedding_index": 0'))
    out = tmp_path / "pred.jsonl"
    assert retrieval.predict_retrieval(data, "val", out) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["prediction"], r["references"]) for r in rows] == [
        ("v0", "about b", ["ref b", "ref b2"]), ("v1", "about a", ["ref a"])]


def test_neighbour_summaries_of_training_rows_never_include_themselves():
    vectors = np.stack([unit(1, 0), unit(0.9, 0.1), unit(0, 1)])
    pool = retrieval.Pool(["a", "b", "c"], vectors, ["sa", "sb", "sc"])
    assert retrieval.neighbour_summaries(pool, vectors, 1, ["a", "b", "c"]) == [["sb"], ["sa"], ["sb"]]
    assert retrieval.neighbour_summaries(pool, vectors, 1) == [["sa"], ["sb"], ["sc"]]


def test_mismatched_dimensions_are_one_line(tmp_path):
    data = tmp_path / "d"
    write_split(data, "train", [unit(1, 0)], ["x"], ["t0"])
    write_split(data, "val", [unit(1, 0, 0)], ["y"], ["v0"])
    with pytest.raises(VecflowError, match="train and val embeddings differ in dimension"):
        retrieval.predict_retrieval(data, "val", tmp_path / "p.jsonl")
    assert not (tmp_path / "p.jsonl").exists()
