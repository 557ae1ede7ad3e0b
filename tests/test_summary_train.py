"""The shared summarizer training loop: WSD plan on a time budget, input-dependence gate, batches, bf16 choice."""

import json

import pytest

from vecflow.summary import loop as summary_train
from vecflow.summary.budget import Plan, budget_steps, fixed_plan, replan
from vecflow.summary.scoring import input_dependence
from vecflow.summary.loop import eligible, epoch_batches
from vecflow.summary.settings import SummarizerSettings

GATE = SummarizerSettings(min_distinct_ratio=0.9).loop_settings()  # the schema's input-dependence gate

REFS = [["#Person1# books a hotel room for today."], ["#Person2# will buy food for dinner."],
        ["#Person1# needs a new job at the school."], ["The doctor wants to help a friend."]]


# ------------------------------------------------------------------------------- input dependence + gate
def test_a_constant_predictor_fails_the_gate():
    constant = ["#Person1# tells #Person2# about the bus."] * len(REFS)
    dep = input_dependence(constant, REFS)
    assert dep["distinct_ratio"] == pytest.approx(1 / len(REFS))
    assert dep["margin"] == pytest.approx(0.0)  # as close to everyone's references as to its own
    assert not eligible({"input_dependence": dep}, GATE)


def test_a_predictor_that_reads_its_input_passes():
    own = [refs[0] for refs in REFS]
    dep = input_dependence(own, REFS)
    assert dep["distinct_ratio"] == 1.0 and dep["own_rouge1"] == pytest.approx(1.0)
    assert dep["margin"] > 0.5
    assert eligible({"input_dependence": dep}, GATE)


def test_distinct_but_unrelated_outputs_fail_on_the_margin():
    """Every prediction different, but each matches another dialogue's reference better than its own."""
    rotated = [REFS[(i + 1) % len(REFS)][0] for i in range(len(REFS))]
    dep = input_dependence(rotated, REFS)
    assert dep["distinct_ratio"] == 1.0 and dep["margin"] < 0
    assert not eligible({"input_dependence": dep}, GATE)


def test_missing_input_dependence_is_not_eligible():
    assert not eligible({"rougeL": 0.9}, GATE)


# ---------------------------------------------------------------------------------------------- plan
def test_wsd_schedule_warms_up_holds_and_decays_to_the_floor():
    plan = Plan(total_steps=100, warmup_steps=10, decay_ratio=0.2, min_lr_ratio=0.0)
    assert plan.lr_factor(0) == pytest.approx(0.1) and plan.lr_factor(9) == pytest.approx(1.0)
    assert plan.lr_factor(50) == 1.0 and plan.decay_start == 80
    assert plan.lr_factor(79) == 1.0 and plan.lr_factor(99) == pytest.approx(0.0)
    factors = [plan.lr_factor(s) for s in range(80, 100)]
    assert factors == sorted(factors, reverse=True)


def test_fixed_plan_is_linear_warmup_then_linear_decay():
    plan = fixed_plan(total_steps=20, warmup_ratio=0.1, decay_ratio=1.0)
    assert plan.warmup_steps == 2 and plan.decay_start == 2 and plan.frozen
    assert plan.lr_factor(19) == pytest.approx(0.0) and plan.lr_factor(10) == pytest.approx(0.5)


def test_budget_steps_leave_room_for_reserved_time():
    assert budget_steps(600, elapsed=60, step=10, seconds_per_step=2.0, reserved_seconds=100) == 10 + 220
    assert budget_steps(600, 60, 10, 2.0, 100, max_steps=50) == 50
    assert budget_steps(100, 200, 10, 2.0, 0) == 11  # over budget: one more step, never zero


def test_replan_moves_the_decay_while_stable_and_freezes_once_decaying():
    plan = Plan(total_steps=10, warmup_steps=5, budget_seconds=300)  # a pessimistic first estimate
    replan(plan, step=20, elapsed=60, seconds_per_step=1.0, reserved_seconds=0)  # the machine got faster
    assert plan.total_steps == 260 and not plan.frozen  # the run is extended, not cut short
    replan(plan, step=100, elapsed=200, seconds_per_step=2.0, reserved_seconds=0)  # and slower again
    assert plan.total_steps == 150 and not plan.frozen
    replan(plan, step=130, elapsed=250, seconds_per_step=3.0, reserved_seconds=0)
    assert plan.frozen and plan.total_steps == 150  # the last 20 % of the budget: the schedule is not moved


def test_a_budget_spent_in_calibration_is_planned_from_the_time_left_not_the_epochs():
    plan = Plan(total_steps=488, warmup_steps=6, budget_seconds=240)  # provisional: epochs x steps per epoch
    replan(plan, step=6, elapsed=262, seconds_per_step=43.8, reserved_seconds=30)  # calibration took the budget
    assert plan.frozen and plan.total_steps == 7  # one more step, then stop: never the 488 of the epochs


# ------------------------------------------------------------------------------------------- batches
def test_length_grouped_batches_are_deterministic_and_cover_every_index():
    lengths = [5, 50, 6, 48, 7, 52, 4, 49] * 8
    a = epoch_batches(lengths, 4, seed=1, epoch=1, group_by_length=True)
    assert a == epoch_batches(lengths, 4, seed=1, epoch=1, group_by_length=True)
    assert a != epoch_batches(lengths, 4, seed=1, epoch=2, group_by_length=True)
    assert sorted(i for b in a for i in b) == list(range(len(lengths)))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a)
    random_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b)
                        for b in epoch_batches(lengths, 4, 1, 1, group_by_length=False))
    assert spread < random_spread  # grouping puts similar lengths together (less padding)


# ----------------------------------------------------------------------------- budgeted run, fake clock
@pytest.mark.slow
def test_a_budgeted_run_plans_its_length_from_throughput_and_ends_decayed(tiny_causal_lm, tmp_path, monkeypatch):
    """Each optimizer step costs exactly 2 s of a fake clock: a 1-minute budget plans ~30 steps minus reserves."""
    from vecflow.summary.causal import train_causal

    clock = {"now": 1000.0}
    monkeypatch.setattr(summary_train.time, "time", lambda: clock["now"])
    original = summary_train.Loop.train_step

    def timed_step(self, step, bf16):
        clock["now"] += 2.0
        return original(self, step, bf16)

    monkeypatch.setattr(summary_train.Loop, "train_step", timed_step)
    rows = [{"id": f"d{i}", "dialogue": f"#Person1#: hello {i} .\n#Person2#: yes .", "summaries": [f"they talk {i}."]}
            for i in range(8)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"seed": 1, "device": "cpu", "max_source_length": 32, "max_target_length": 8, "epochs": 100,
                "batch_size": 4, "learning_rate": 1e-3, "warmup_ratio": 0.1, "decay_ratio": 0.25, "val_samples": 2,
                "evals": 2, "max_minutes": 1.0, "reserve_seconds": 10, "calibration_steps": 4, "bf16": False,
                "tracking": {}, "generation": {"num_beams": 1, "max_new_tokens": 2},
                "min_distinct_ratio": 0.0, "min_input_margin": -1.0}
    summary = train_causal(data, data, tiny_causal_lm, settings, tmp_path / "out")
    # 60 s budget - 10 s reserve = 25 steps of 2 s (evaluations cost no fake time here)
    assert summary["planned_steps"] == summary["steps"] == 25
    assert summary["train_minutes"] == pytest.approx(50 / 60, abs=0.05)
    assert summary["train_seconds"] == pytest.approx(summary["train_minutes"] * 60, abs=0.6)
    plan = Plan(**summary["schedule"])
    assert plan.lr_factor(summary["steps"] - 1) == pytest.approx(0.0)  # ended decayed, not cut mid-schedule
    history = [json.loads(line) for line in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in history][-1] == 25 and all(r["train/samples_per_s"] > 0 for r in history)


@pytest.mark.slow
def test_bf16_auto_times_both_and_records_the_choice(tiny_causal_lm, tmp_path, monkeypatch):
    from vecflow.summary.causal import train_causal

    monkeypatch.setattr(summary_train, "cpu_has_bf16", lambda: True)  # time both, whatever this CPU is

    rows = [{"id": f"d{i}", "dialogue": f"#Person1#: hi {i} .", "summaries": [f"hi {i}."]} for i in range(4)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {"seed": 1, "device": "cpu", "max_source_length": 32, "max_target_length": 8, "epochs": 5,
                "batch_size": 2, "learning_rate": 1e-3, "val_samples": 2, "bf16": "auto", "calibration_steps": 4,
                "tracking": {}, "generation": {"num_beams": 1, "max_new_tokens": 2},
                "min_distinct_ratio": 0.0, "min_input_margin": -1.0}
    summary = train_causal(data, data, tiny_causal_lm, settings, tmp_path / "out")
    timing = summary["bf16_timing"]
    assert timing["chosen"] in ("bf16", "fp32") and summary["bf16"] == (timing["chosen"] == "bf16")
    assert timing["fp32_s_per_token"] > 0 and timing["bf16_s_per_token"] > 0


def test_the_summarizer_optimizer_is_torchs_fused_adamw_on_cpu():
    """HF Trainer's default; the per-tensor AdamW loop was 30 % of a BERT2BERT step (BENCHMARKS.md goal 2)."""
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    optimizer = summary_train.make_optimizer(model, SummarizerSettings(learning_rate=1e-3, weight_decay=0.01).loop_settings())
    assert optimizer.defaults["fused"] is True
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]  # no decay on biases and norms


def test_bf16_auto_is_fp32_without_native_bf16_on_the_cpu(monkeypatch):
    """Emulated bf16 made one timing step of SmolLM2 take over 10 minutes on an AVX2-only EPYC."""
    import torch

    monkeypatch.setattr(summary_train, "cpu_has_bf16", lambda: False)
    assert summary_train.use_bf16("auto", torch.device("cpu")) is False
    monkeypatch.setattr(summary_train, "cpu_has_bf16", lambda: True)
    assert summary_train.use_bf16("auto", torch.device("cpu")) is None  # decided by timing
    assert summary_train.use_bf16(False, torch.device("cpu")) is False
