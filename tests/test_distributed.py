"""Several ranks through torchrun (issue 13 item 4): the helpers, 2 gloo ranks training like 1 rank with the same
global batch, and the Snakemake wiring (train.gpus -> gpu=N and a torchrun shell line)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vecflow.core import distributed
from vecflow.core.errors import VecflowError

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
LAUNCHER_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def one_process(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)


def subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    return env | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                  "TOKENIZERS_PARALLELISM": "false"}


def torchrun(args: list[str], cwd: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    result = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", str(ranks), *args], cwd=cwd,
                            env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


# ------------------------------------------------------------------------------------------- helpers
def test_shard_splits_a_global_batch_like_a_distributed_sampler():
    batch = [7, 3, 9, 1, 4, 8, 2, 6, 5]
    parts = [distributed.shard(batch, r, 2) for r in range(2)]
    assert parts == [[7, 9, 4, 2, 5], [3, 1, 8, 6]]
    assert sorted(parts[0] + parts[1]) == sorted(batch)
    assert distributed.shard([5], 1, 2) == []  # a short last batch leaves a rank empty (it then runs weight 0)
    assert distributed.shard(batch, 0, 1) == batch


def test_one_process_helpers_are_no_ops(one_process):
    cpu = torch.device("cpu")
    assert distributed.setup(cpu) is cpu
    assert (distributed.world_size(), distributed.rank(), distributed.is_main()) == (1, 0, True)
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    calls = []
    assert distributed.main_first(lambda: calls.append(1) or "x") == "x" and calls == [1]
    assert distributed.shard([1, 2, 3]) == [1, 2, 3]
    assert distributed.wrap_loss(torch.nn.Linear(2, 2), lambda m, b: m(b).sum(), cpu) is None


@pytest.mark.parametrize(("device", "message"), [
    ("mps", "cannot run 2 ranks"),
    ("cuda", "train.gpus: 2 ranks on this node but torch sees"),
])
def test_setup_refuses_what_cannot_run_several_ranks(one_process, monkeypatch, device, message):
    if device == "cuda" and torch.cuda.device_count() >= 8:
        pytest.skip("this machine has enough GPUs")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "7")
    with pytest.raises(VecflowError, match=message):
        distributed.setup(torch.device(device))
    assert distributed.world_size() == 1  # nothing was joined


COLLECTIVES = """
import json, sys, torch
from pathlib import Path
from vecflow.core import distributed

out = Path(sys.argv[1])
device = distributed.setup(torch.device("cpu"))
r = distributed.rank()


def look():  # rank 0 writes a file; a rank that runs after it sees the file
    existed = (out / "first").exists()
    if distributed.is_main():
        (out / "first").write_text("0")
    return existed


seen = distributed.main_first(look)
result = {"rank": r, "world": distributed.world_size(), "main": distributed.is_main(),
          "sum": distributed.all_reduce_sum([r + 1, 10 * r]), "broadcast": distributed.broadcast({"from": r}),
          "saw_rank0_file": seen, "shard": distributed.shard(list(range(5)))}
# DDP through wrap_loss: each rank feeds its own input, the gradients come back averaged
model = torch.nn.Linear(2, 1, bias=False)
ddp = distributed.wrap_loss(model, lambda m, batch: m(batch["x"]).sum(), device)
ddp({"x": torch.tensor([[1.0, 2.0]]) * (r + 1)}).backward()
result["grad"] = model.weight.grad.tolist()
(out / f"rank{r}.json").write_text(json.dumps(result))
"""


def test_collectives_across_two_gloo_ranks(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(COLLECTIVES)
    torchrun([str(script), str(tmp_path)], cwd=tmp_path)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, result in enumerate(results):
        assert (result["rank"], result["world"], result["main"]) == (r, 2, r == 0)
        assert result["sum"] == [3.0, 10.0]
        assert result["broadcast"] == {"from": 0}
        assert result["grad"] == [[1.5, 3.0]]  # mean of [1, 2] and [2, 4]
    assert results[0]["saw_rank0_file"] is False and results[1]["saw_rank0_file"] is True  # rank 0 went first
    assert results[0]["shard"] == [0, 2, 4] and results[1]["shard"] == [1, 3]


# ------------------------------------------------------------------------------------- 2 ranks = 1 rank
TOPICS = ["book a hotel room", "dinner and food tomorrow", "a new job at school", "money for a good book",
          "the doctor today", "help with python data", "a friend will buy lunch", "work and time", "an old file"]
# 9 dialogues of different lengths, global batch 4: batches of 4, 4 and 1 (rank 1's share of the last is empty)
SETTINGS = {
    "seed": 3, "device": "cpu", "max_source_length": 64, "max_target_length": 24, "epochs": 1, "batch_size": 4,
    "learning_rate": 1e-2, "warmup_ratio": 0.0, "evals": 3, "val_samples": 1, "bf16": False, "tracking": {},
    "generation": {"num_beams": 1, "max_new_tokens": 2}, "min_distinct_ratio": 0.0,
    # no checkpoint passes the gate, so the LAST model (after every step) is the one published and compared
    "min_input_margin": 10.0, "system_message": "", "user_template": "",
}
LOSS_TOLERANCE = 1e-6  # relative; measured ~3e-8 (float32 sums in another order); unweighted rank losses: 4e-5
WEIGHT_TOLERANCE = 1e-4  # absolute, after 3 Adam steps at lr 1e-2


def write_dialogues(path: Path, count: int) -> Path:
    rows = []
    for i, topic in enumerate(TOPICS[:count]):
        dialogue = "#Person1#: " + " ".join(["can you help me with", topic, "?"] * (1 + i % 3)) + "\n#Person2#: yes ."
        rows.append({"id": f"d{i}", "dialogue": dialogue,
                     "summaries": [f"#Person1# talks about {topic}" + " today" * (i % 2)]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def losses(folder: Path) -> list[float]:
    return [json.loads(line)["train/loss"] for line in (folder / "history.jsonl").read_text().splitlines()]


def test_two_gloo_ranks_train_like_one_rank_with_the_same_global_batch(tiny_causal_lm, tmp_path):
    from safetensors.torch import load_file

    from vecflow.cli import main

    train = write_dialogues(tmp_path / "train.jsonl", 9)
    selection = write_dialogues(tmp_path / "selection.jsonl", 1)
    args = ["train-causal", "--train", str(train), "--val", str(selection), "--base", str(tiny_causal_lm),
            "--settings", json.dumps(SETTINGS)]
    assert main(args + ["--out", str(tmp_path / "one" / "model")]) == 0
    torchrun(["-m", "vecflow.cli", *args, "--out", str(tmp_path / "two" / "model")], cwd=tmp_path)
    one, two = tmp_path / "one" / "model", tmp_path / "two" / "model"

    assert files_under(one) == files_under(two)  # the same artifact layout
    assert files_under(tmp_path / "two") == ["model", *[f"model/{f}" for f in files_under(two)]]  # no leftovers
    summary_one, summary_two = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert (summary_one["ranks"], summary_two["ranks"]) == (1, 2)
    for key in ("steps", "samples_seen", "planned_steps", "best_step"):
        assert summary_one[key] == summary_two[key], key
    assert summary_two["steps"] == 3 and summary_two["samples_seen"] == 9
    loss_one, loss_two = losses(one), losses(two)
    assert len(loss_one) == 3 and loss_one[-1] < loss_one[0]  # it learned something: the test can see a defect
    assert loss_two == pytest.approx(loss_one, rel=LOSS_TOLERANCE)
    weights_one, weights_two = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for name in weights_one:
        assert torch.allclose(weights_one[name], weights_two[name], atol=WEIGHT_TOLERANCE), name


# ---------------------------------------------------------------------------------------- Snakemake wiring
def dry_run_jobs(tmp_path: Path, tiny_encoder, tiny_causal_lm, gpus: int, global_gpus: int,
                 device: str = "cuda") -> dict[str, str]:
    """rule name -> its block of `snakemake -n -p` output (resources and shell command)."""
    import yaml

    from test_workflow import tiny_config, write_workdir

    config = tiny_config(tiny_encoder, tiny_causal_lm)
    config["summarizer"]["kind"] = ["seq2seq", "causal"]
    config["train"] = {"gpus": gpus}
    config["device"] = device  # cuda: a GPU machine's plan (a dry run needs no GPU)
    workdir = write_workdir(tmp_path, config)
    result = subprocess.run(
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1", "-n", "-p",
         "--resources", f"gpu={global_gpus}", "--", "results/summarizer/model", "results/causal/model"],
        capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert yaml.safe_load((workdir / "config" / "config.yaml").read_text())["train"] == {"gpus": gpus}
    blocks = {}
    for block in result.stdout.split("\nrule ")[1:]:
        blocks[block.split(":", 1)[0]] = block
    return blocks


def test_train_gpus_requests_gpus_and_launches_torchrun(tmp_path, tiny_encoder, tiny_causal_lm):
    jobs = dry_run_jobs(tmp_path, tiny_encoder, tiny_causal_lm, gpus=2, global_gpus=2)
    for rule, command in (("train_summarizer", "train-summarizer"), ("train_causal", "train-causal")):
        assert re.search(r"resources: .*\bgpu=2\b", jobs[rule]), jobs[rule]
        assert f"Shell command: torchrun --standalone --nproc-per-node 2 -m vecflow.cli {command} " in jobs[rule]


def test_a_job_never_starts_more_ranks_than_the_gpus_it_is_granted(tmp_path, tiny_encoder, tiny_causal_lm):
    """`--resources gpu=1` caps the job's gpu resource at 1: then it runs one plain process."""
    jobs = dry_run_jobs(tmp_path, tiny_encoder, tiny_causal_lm, gpus=2, global_gpus=1)
    for rule, command in (("train_summarizer", "train-summarizer"), ("train_causal", "train-causal")):
        assert f"Shell command: vecflow {command} " in jobs[rule] and "torchrun" not in jobs[rule]
        assert re.search(r"resources: .*\bgpu=1\b", jobs[rule]), jobs[rule]


def test_cpu_jobs_do_not_hold_the_gpu_slot(tmp_path, tiny_encoder, tiny_causal_lm):
    """device: cpu plans gpu=0, so `--resources gpu=1` does not run the CPU torch jobs one at a time (issue 25)."""
    jobs = dry_run_jobs(tmp_path, tiny_encoder, tiny_causal_lm, gpus=2, global_gpus=1, device="cpu")
    for rule, command in (("train_summarizer", "train-summarizer"), ("train_causal", "train-causal")):
        assert f"Shell command: vecflow {command} " in jobs[rule] and "torchrun" not in jobs[rule]
        assert re.search(r"resources: .*\bgpu=0\b", jobs[rule]), jobs[rule]
