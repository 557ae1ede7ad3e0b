"""The training loop shared by the summarizer families (seq2seq and causal): step-based, budgeted, resumable.

A family supplies the model, tokenized ``features`` (``input_ids``, ``attention_mask``, ``labels`` — unpadded),
a collator (dynamic padding, labels with -100) and ``validate(model) -> (scores, examples)`` that scores text
produced by ``generate`` on the *selection* split. This module does the rest:

- batches: length-grouped (transformers' ``LengthGroupedSampler``, seeded per epoch) so that a batch holds
  similar lengths and little padding; the order depends only on (seed, epoch), so reruns and resumed runs see
  the same batches;
- schedule: warmup-stable-decay (``vecflow.summary.budget``); with ``max_minutes`` the length is planned from the
  measured throughput so the run ends at the budget with the learning rate decayed;
- bf16 autocast: ``bf16: true|false|auto``; ``auto`` times the calibration steps both ways on this device and
  keeps the faster (the choice and both timings are in the summary);
- selection: ``evals`` evaluations spread over the run; a checkpoint is eligible only if its outputs depend on
  the input (``min_distinct_ratio`` and a positive own-vs-shuffled ROUGE-1 margin, see
  ``vecflow.summary.scoring.input_dependence``); the best eligible one by ``selection_metric`` is published;
- throughput: samples/s and (non-padding) tokens/s per interval in ``history.jsonl``;
- resume: ``DIR.partial/last/`` (model, tokenizer, ``state.pt`` with optimizer, plan, step, RNG, best) is
  written at every evaluation; a rerun continues from it when settings, data and base are unchanged;
- several ranks (``torchrun --nproc-per-node N``, see ``vecflow.core.distributed``): ``batch_size`` is the GLOBAL
  batch; each rank takes its share of every batch, DDP all-reduces the gradients, the loss is weighted so that
  the gradient is the one-process gradient; rank 0 evaluates and writes, the others only train.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import shutil
import time
import warnings
from pathlib import Path

from vecflow.core import distributed
from vecflow.summary.budget import Plan, budget_steps, fixed_plan, replan, set_learning_rate
from vecflow.core.errors import VecflowError
from vecflow.core.io import atomic_dir, read_jsonl, sha256_file, write_json, write_jsonl
from vecflow.core.tracking import copy_tracking_record
from vecflow.summary.settings import LoopSettings


# ------------------------------------------------------------------------------------------- batches
def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> list[list[int]]:
    """Index batches for one epoch: shuffled with (seed, epoch), and length-grouped when asked."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    if group_by_length and len(lengths) > batch_size:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        order = list(LengthGroupedSampler(batch_size, lengths=lengths, generator=generator))
    else:
        order = torch.randperm(len(lengths), generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def batch_at(micro_step: int, lengths: list[int], batch_size: int, seed: int, group_by_length: bool,
             cache: dict) -> list[int]:
    """The ``micro_step``-th batch of the endless sequence epoch 1, epoch 2, ... (deterministic)."""
    per_epoch = math.ceil(len(lengths) / batch_size)
    epoch, position = micro_step // per_epoch + 1, micro_step % per_epoch
    if cache.get("epoch") != epoch:
        cache.update(epoch=epoch, batches=epoch_batches(lengths, batch_size, seed, epoch, group_by_length))
    return cache["batches"][position]


# -------------------------------------------------------------------------------------------- helpers
def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic on this CPU (AVX512-BF16 or AMX): without it torch emulates bf16 matmuls."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def use_bf16(requested, device) -> bool | None:
    """True/False for a fixed choice, None for 'auto' (decided by timing); bf16 only where the device has it."""
    import torch

    if requested == "auto":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return False
        if device.type == "cpu" and not cpu_has_bf16():
            return False  # emulated bf16: one timing step alone can take minutes (BENCHMARKS.md, design notes)
        return None if device.type in ("cpu", "cuda") else False
    if not requested:
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"


def make_optimizer(model, settings: LoopSettings, lr_scale=None):
    """AdamW, no weight decay on biases and norms; the learning rate is set per step from the plan.

    ``lr_scale(name) -> float`` scales a parameter's learning rate (0 freezes it), e.g. a warm-started encoder.
    """
    import torch

    groups: dict[tuple, list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = 1.0 if lr_scale is None else float(lr_scale(name))
        if scale == 0.0:
            param.requires_grad_(False)
            continue
        is_norm = param.ndim < 2 or "norm" in name.lower()
        groups.setdefault((is_norm, scale), []).append(param)
    decay = float(settings.weight_decay)
    param_groups = [{"params": params, "weight_decay": 0.0 if is_norm else decay, "lr_scale": scale}
                    for (is_norm, scale), params in sorted(groups.items())]
    # the fused kernel (one pass over all tensors) where torch has it, as HF Trainer's default adamw_torch_fused:
    # the per-tensor loop was a large share of a BERT2BERT step on CPU (py-spy, BENCHMARKS.md goal 2)
    devices = {p.device.type for group in param_groups for p in group["params"]}
    fused = bool(devices) and devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(param_groups, lr=float(settings.learning_rate), fused=fused or None)


def partial_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".partial")


def save_model_folder(target: Path, model, tokenizer, state: dict | None = None, spec: dict | None = None) -> None:
    """Model + tokenizer (+ ``vecflow_summarizer.json``, + ``state.pt``) into ``target``, atomically."""
    import torch
    from vecflow.summary.infer import write_spec

    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if spec is not None:
            write_spec(tmp, spec)
        if state is not None:
            torch.save(state, tmp / "state.pt")


def rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_fingerprint(settings: dict, data_paths: list, base_dir) -> str:
    """What a resumed run must share with the interrupted one: settings as sent (not device/tracking), data,
    base."""
    import hashlib
    import json

    kept = {k: v for k, v in settings.items() if k not in ("device", "tracking")}
    parts = [json.dumps(kept, sort_keys=True), *(sha256_file(p) for p in data_paths), str(base_dir)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_resume_state(partial: Path, fingerprint: str) -> dict | None:
    """The state saved at the last evaluation of the SAME run, or None (then start afresh).

    With several ranks, rank 0 looks first (and removes a stale ``DIR.partial``), then the others read.
    """
    return distributed.main_first(lambda: _load_resume_state(Path(partial), fingerprint))


def _load_resume_state(partial: Path, fingerprint: str) -> dict | None:
    import torch

    state_path = partial / "last" / "state.pt"
    if not state_path.exists():
        return None
    try:
        state = torch.load(state_path, weights_only=False, map_location="cpu")
    except Exception as exc:  # a corrupt file: say so rather than silently restart
        raise VecflowError(f"{state_path}: cannot read resume state ({exc}); delete {partial} to start over") from None
    if state.get("fingerprint") != fingerprint:
        print(f"[vecflow] {partial}: settings, data or base changed since it was written; starting afresh",
              flush=True)
        shutil.rmtree(partial)
        return None
    return state


def trim_history(history_path: Path, last_step: int) -> None:
    """Drop history records logged after ``last_step`` (by a run that died before saving its state)."""
    if not history_path.exists():
        return
    keep = [r for r in read_jsonl(history_path) if int(r.get("step", 0)) <= last_step]
    write_jsonl(history_path, keep)


def publish(out_dir: Path, partial: Path, summary: dict) -> None:
    """``DIR`` = best model folder + history.jsonl + summary.json, atomically; then drop ``DIR.partial``."""
    with atomic_dir(out_dir) as tmp:
        for item in (partial / "best").iterdir():
            if item.is_dir():  # e.g. the ELM's tuned LM (lm/)
                shutil.copytree(item, tmp / item.name)
            elif item.name != "state.pt":
                shutil.copy2(item, tmp / item.name)
        shutil.copy2(partial / "history.jsonl", tmp / "history.jsonl")
        copy_tracking_record(partial, tmp)  # names the W&B / MLflow runs, when tracking was on
        write_json(tmp / "summary.json", summary)
    shutil.rmtree(partial)


def eligible(scores: dict, settings: LoopSettings) -> bool:
    """A checkpoint may be selected only if its validation outputs depend on the input."""
    dep = scores.get("input_dependence") or {}
    return (dep.get("distinct_ratio", 0.0) >= float(settings.min_distinct_ratio)
            and dep.get("margin", 0.0) > float(settings.min_input_margin))


# ---------------------------------------------------------------------------------------------- loop
class Loop:
    """One budgeted training run (see the module docstring). ``run()`` returns the summary dict.

    ``settings``: what the loop reads (the family's ``loop_settings()``); ``record``: the run's settings as the
    tracker records them (the job's settings as sent)."""

    def __init__(self, *, model, tokenizer, features, collator, validate, settings: LoopSettings, out_dir,
                 fingerprint: str, spec: dict, device, run_name: str, resume: dict | None, forward=None,
                 lr_scale=None, record: dict | None = None):
        self.model, self.tokenizer, self.features, self.collator = model, tokenizer, features, collator
        self.validate, self.settings, self.spec, self.device = validate, settings, spec, device
        self.record = settings.model_dump() if record is None else record
        self.out_dir, self.partial = Path(out_dir), partial_dir(Path(out_dir))
        self.fingerprint, self.run_name, self.resume = fingerprint, run_name, resume
        self.forward = forward or (lambda model, batch: model(**batch).loss)
        self.lengths = [len(f["input_ids"]) + len(f["labels"]) for f in features]
        self.batch_size = settings.batch_size
        self.grad_accum = settings.grad_accum
        self.peak_lr = float(settings.learning_rate)
        self.max_grad_norm = float(settings.max_grad_norm)
        self.seed = settings.seed
        self.group_by_length = settings.group_by_length
        self.steps_per_epoch = math.ceil(math.ceil(len(features) / self.batch_size) / self.grad_accum)
        self.budget = float(settings.max_minutes) * 60.0
        self.evals = settings.evals
        self.optimizer = make_optimizer(model, settings, lr_scale)
        self.ddp = distributed.wrap_loss(model, self.forward, device)  # None with one rank
        self.world, self.main = distributed.world_size(), distributed.is_main()
        self.batch_cache: dict = {}
        self.saved_model = model  # what save_pretrained is called on (a LoRA run sets a merging wrapper)
        self.before_publish = None  # callable(folder of the chosen checkpoint) -> dict merged into the summary
        self.after_evaluate = None  # callable(step, score) after each logged evaluation (an Optuna trial's report)

    # ------------------------------------------------------------------------------ one optimizer step
    def train_step(self, step: int, bf16: bool) -> tuple[float, int, int]:
        """Returns (mean loss, samples, non-padding tokens) of optimizer step ``step``, over all ranks.

        With several ranks each takes its share of the same (global) batch; its loss, a mean over its labelled
        tokens, is weighted by ``world × its labelled tokens / the batch's``, so the gradient DDP averages is the
        gradient of the one-process loss. A rank whose share is empty (a short last batch) runs one example
        with weight 0, because every rank must take part in the all-reduce.
        """
        import torch

        self.model.train()
        set_learning_rate(self.optimizer, self.peak_lr, self.plan, step)
        losses, samples, tokens = [], 0, 0
        for micro in range(self.grad_accum):
            idx = batch_at(step * self.grad_accum + micro, self.lengths, self.batch_size, self.seed,
                           self.group_by_length, self.batch_cache)
            mine = distributed.shard(idx)
            batch = self.collator([self.features[i] for i in (mine or idx[:1])]).to(self.device)
            labelled = int((batch["labels"] != -100).sum()) if mine else 0
            own_tokens = int(batch["attention_mask"].sum()) + labelled if mine else 0
            all_labelled, all_tokens = distributed.all_reduce_sum([labelled, own_tokens])
            weight = labelled * self.world / max(all_labelled, 1)
            last = micro == self.grad_accum - 1
            with contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync():
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16), \
                        warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Version v4.12.0", category=FutureWarning)
                    loss = self.forward(self.model, batch) if self.ddp is None else self.ddp(dict(batch))
                (loss * weight / self.grad_accum).backward()
            losses.append(loss.item() * labelled / max(all_labelled, 1))
            samples += len(idx)
            tokens += int(all_tokens)
        losses = distributed.all_reduce_sum(losses)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return sum(losses) / len(losses), samples, tokens

    # --------------------------------------------------------------------------------------- the run
    def run(self) -> dict:
        from vecflow.core.tracking import Tracker

        settings, resume = self.settings, self.resume
        max_steps = settings.epochs * self.steps_per_epoch
        bf16_choice = use_bf16(settings.bf16, self.device)
        bf16_timing: dict = {}
        if settings.bf16 == "auto" and bf16_choice is False:
            bf16_timing = {"chosen": "fp32", "reason": f"{self.device.type} has no native bf16 (not timed)"}
        if resume is None:
            if self.budget > 0:  # provisional until calibrated
                self.plan = Plan(total_steps=max_steps, warmup_steps=4 * settings.calibration_steps,
                                 decay_ratio=float(settings.decay_ratio), min_lr_ratio=float(settings.min_lr_ratio),
                                 budget_seconds=self.budget)
            else:
                self.plan = fixed_plan(max_steps, float(settings.warmup_ratio), float(settings.decay_ratio),
                                       float(settings.min_lr_ratio))
            step, elapsed_before, best, samples_seen, evals_done = 0, 0.0, {"step": -1, "score": -math.inf}, 0, []
        else:
            if self.main:
                print(f"[vecflow] resuming from {self.partial} at step {resume['step']}", flush=True)
            self.optimizer.load_state_dict(resume["optimizer"])
            restore_rng(resume["rng"])
            self.plan = Plan(**resume["plan"])
            step, elapsed_before, best = resume["step"], resume["elapsed"], resume["best"]
            samples_seen, evals_done = resume["samples_seen"], resume["evals_done"]
            bf16_choice, bf16_timing = resume["bf16"], resume.get("bf16_timing", {})
            if self.main:
                trim_history(self.partial / "history.jsonl", step)
        tracker = Tracker(self.partial / "history.jsonl", run_name=self.run_name, config=self.record,
                          backends=settings.tracking, resume=resume is not None) if self.main else None
        metric = settings.selection_metric
        calibration = settings.calibration_steps
        started = time.time() - elapsed_before
        eval_seconds = resume.get("eval_seconds", 0.0) if resume else 0.0

        def elapsed() -> float:
            return time.time() - started

        last_eval: dict = {}

        def evaluate(step_now: int, interval: dict) -> None:
            nonlocal best, eval_seconds
            t0 = time.time()
            scores, examples = self.validate(self.model)
            eval_seconds = time.time() - t0
            per_sample = (scores.pop("per_sample", None) or {}).get(metric)
            ok = eligible(scores, settings)
            score = float(scores.get(metric, -math.inf))
            improved = ok and score > best["score"]
            if improved:
                best = {"step": step_now, "score": score, "metric": metric, "per_sample": per_sample}
                save_model_folder(self.partial / "best", self.saved_model, self.tokenizer, spec=self.spec)
            last_eval.update(step=step_now, score=score, eligible=ok, per_sample=per_sample)
            record = {"step": step_now, "epoch": round(samples_seen / max(len(self.features), 1), 3),
                      "samples_seen": samples_seen, "elapsed_minutes": round(elapsed() / 60, 3),
                      "lr": self.peak_lr * self.plan.lr_factor(max(step_now - 1, 0)) if step_now else 0.0,
                      "planned_steps": self.plan.total_steps, "eval_seconds": round(eval_seconds, 1),
                      "selection/eligible": ok, **interval,
                      **{f"val/{k}": v for k, v in _flat(scores).items()}, "val/examples": examples}
            evals_done.append(step_now)
            tracker.log(record, step=step_now)
            print(f"[vecflow] step {step_now}/{self.plan.total_steps} ({samples_seen} samples, "
                  f"{elapsed() / 60:.1f} min): {metric} {score:.4f} distinct "
                  f"{scores.get('input_dependence', {}).get('distinct_ratio', float('nan')):.2f}"
                  f"{' *best*' if improved else ''}{'' if ok else ' (not eligible: ignores its input)'}", flush=True)
            if self.after_evaluate is not None:
                self.after_evaluate(step_now, score)

        def save_last() -> None:
            state = {"step": step, "optimizer": self.optimizer.state_dict(), "rng": rng_state(), "best": best,
                     "plan": self.plan.state(), "elapsed": elapsed(), "samples_seen": samples_seen,
                     "evals_done": evals_done, "bf16": bf16_choice, "bf16_timing": bf16_timing,
                     "eval_seconds": eval_seconds, "fingerprint": self.fingerprint}
            save_model_folder(self.partial / "last", self.saved_model, self.tokenizer, state=state, spec=self.spec)

        def sync() -> None:
            """Rank 0's plan, bf16 choice and evaluated steps on every rank: they come from its timings and its
            evaluations, and every rank must run the same steps."""
            nonlocal bf16_choice, bf16_timing, evals_done
            if self.world > 1:
                plan, bf16_choice, bf16_timing, evals_done = distributed.broadcast(
                    (self.plan.state(), bf16_choice, bf16_timing, evals_done))
                self.plan = Plan(**plan)

        if resume is None and settings.eval_at_start:
            if self.main:
                evaluate(0, {})
            sync()
        interval = {"loss_sum": 0.0, "steps": 0, "samples": 0, "tokens": 0, "t0": time.time()}
        next_eval = self._next_eval(step, evals_done)
        # the budget is planned from `calibration` steps timed in the precision that will be used (after the
        # bf16 decision when it is 'auto'), never from the first steps or the untrained model's evaluation
        plan_at = calibration + (2 * max(calibration // 2, 2) + 1 if bf16_choice is None else 0)
        calib = {"t0": time.time(), "steps": 0}
        while step < self.plan.total_steps:
            if bf16_choice is None:  # 'auto': alternate fp32 / bf16 during calibration, keep the faster
                use = step % 2 == 1
            else:
                use = bf16_choice
            t0 = time.time()
            loss, samples, tokens = self.train_step(step, bool(use))
            seconds = time.time() - t0
            step += 1
            samples_seen += samples
            for key, value in (("loss_sum", loss), ("steps", 1), ("samples", samples), ("tokens", tokens)):
                interval[key] += value
            calib["steps"] += 1
            if bf16_choice is None and step >= 2:
                bf16_timing.setdefault("bf16" if use else "fp32", []).append(seconds / max(tokens, 1))
                if step >= 2 * max(calibration // 2, 2) + 1:
                    fp32 = sorted(bf16_timing["fp32"])[len(bf16_timing["fp32"]) // 2]
                    bf = sorted(bf16_timing["bf16"])[len(bf16_timing["bf16"]) // 2]
                    bf16_choice = bf < fp32
                    bf16_timing = {"fp32_s_per_token": fp32, "bf16_s_per_token": bf, "chosen": "bf16" if bf16_choice else "fp32"}
                    sync()
                    if self.main:
                        print(f"[vecflow] bf16 autocast {'on' if bf16_choice else 'off'}: "
                              f"{bf * 1e3:.3f} vs {fp32 * 1e3:.3f} ms/token", flush=True)
                    calib = {"t0": time.time(), "steps": 0}
            if self.budget > 0 and step == plan_at and resume is None:
                if self.main:
                    per_step = (time.time() - calib["t0"]) / max(calib["steps"], 1)
                    warmup = max(int(float(settings.warmup_ratio) * budget_steps(
                        self.budget, elapsed(), step, per_step, 0.0, max_steps)), calibration)
                    self.plan.warmup_steps = warmup
                    self._replan(step, elapsed(), per_step, eval_seconds, evals_done, max_steps)
                    print(f"[vecflow] budget {self.budget / 60:.1f} min: {per_step:.2f} s/step -> "
                          f"{self.plan.total_steps} steps (warmup {warmup}, decay from {self.plan.decay_start})",
                          flush=True)
                sync()
                next_eval = self._next_eval(step, evals_done)
            if step >= next_eval or step >= self.plan.total_steps:
                window = time.time() - interval["t0"]
                stats = {"train/loss": interval["loss_sum"] / max(interval["steps"], 1),
                         "train/samples_per_s": interval["samples"] / max(window, 1e-9),
                         "train/tokens_per_s": interval["tokens"] / max(window, 1e-9)}
                per_step = window / max(interval["steps"], 1)
                if self.main:  # the other ranks wait in sync()
                    evaluate(step, stats)
                    if self.budget > 0 and step < self.plan.total_steps:
                        self._replan(step, elapsed(), per_step, eval_seconds, evals_done, max_steps)
                    if step < self.plan.total_steps:  # resume state; the finished run publishes best/ instead
                        save_last()
                sync()
                next_eval = self._next_eval(step, evals_done)
                interval = {"loss_sum": 0.0, "steps": 0, "samples": 0, "tokens": 0, "t0": time.time()}

        if not self.main:  # rank 0 writes DIR; every rank returns its summary
            return distributed.broadcast(None)
        if best["step"] < 0:
            print("[vecflow] WARNING: no evaluated checkpoint depends on its input (distinct outputs and a "
                  "positive own-vs-shuffled margin); publishing the last one, which the deploy gate will refuse",
                  flush=True)
            save_model_folder(self.partial / "best", self.saved_model, self.tokenizer, spec=self.spec)
        selection = final_or_best(best, last_eval, settings.selection_rule)
        if selection["kept"] == "final" and best["step"] != last_eval.get("step"):
            save_model_folder(self.partial / "best", self.saved_model, self.tokenizer, spec=self.spec)
            best = {"step": last_eval["step"], "score": last_eval["score"], "metric": metric}
        print(f"[vecflow] selection ({selection['rule']}): {selection['reason']}", flush=True)
        summary = {"best_step": best["step"], "best_score": best["score"] if best["step"] >= 0 else None,
                   "selection_metric": metric, "selection": selection, "selection_gate_passed": best["step"] >= 0,
                   "steps": step, "planned_steps": self.plan.total_steps, "samples_seen": samples_seen,
                   "epochs_seen": round(samples_seen / max(len(self.features), 1), 3),
                   "train_minutes": round(elapsed() / 60, 2), "train_seconds": round(elapsed(), 3),
                   "budget_minutes": self.budget / 60,
                   "train_dialogues": len(self.features), "bf16": bool(bf16_choice), "bf16_timing": bf16_timing,
                   "device": str(self.device), "ranks": self.world, "schedule": self.plan.state()}
        if self.before_publish is not None:
            summary |= self.before_publish(self.partial / "best")
        tracker.finish(summary)
        publish(self.out_dir, self.partial, summary)
        return distributed.broadcast(summary)

    def _next_eval(self, step: int, evals_done: list) -> int:
        """The step of the next evaluation: ``evals`` evenly spaced over the plan, or once per epoch."""
        total = self.plan.total_steps
        if self.evals > 0:
            left = max(self.evals - len([s for s in evals_done if s > 0]), 1)
            return min(step + max(math.ceil((total - step) / left), 1), total)
        return min((step // self.steps_per_epoch + 1) * self.steps_per_epoch, total)

    def _replan(self, step: int, elapsed: float, per_step: float, eval_seconds: float, evals_done: list,
                max_steps: int) -> None:
        left = max(self.evals - len([s for s in evals_done if s > 0]), 1) if self.evals else 1
        # evaluations still to come, at the last one's cost, but never more than max_eval_share of the budget
        # (the untrained model's evaluation writes long texts and would reserve far too much)
        evals_cost = min(eval_seconds * left, float(self.settings.max_eval_share) * self.budget)
        reserve = evals_cost + float(self.settings.reserve_seconds)
        replan(self.plan, step=step, elapsed=elapsed, seconds_per_step=per_step, reserved_seconds=reserve,
               max_steps=max_steps)


def final_or_best(best: dict, final: dict, rule: str) -> dict:
    """Which checkpoint to publish: the best-scoring one, or (``final_unless_significant``) the final, decayed
    weights unless an earlier checkpoint beats them on the selection split by more than one standard error of
    the paired per-dialogue difference (a small selection split cannot tell apart what is within its noise).
    """
    out = {"rule": rule, "best_scored_step": best["step"], "final_step": final.get("step"), "kept": "best"}
    if best["step"] < 0 or final.get("step") is None or best["step"] == final["step"]:
        return out | {"reason": "the best-scoring checkpoint is the final one" if best["step"] >= 0
                      else "no checkpoint passed the input-dependence gate"}
    a, b = best.get("per_sample"), final.get("per_sample")
    if a and b and len(a) == len(b):
        diffs = [x - y for x, y in zip(a, b)]
        gain = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("inf")
        out |= {"gain_over_final": gain, "standard_error": se, "dialogues": len(diffs)}
    if rule != "final_unless_significant":
        return out | {"reason": f"step {best['step']} scored highest"}
    if not final.get("eligible"):
        return out | {"reason": "the final checkpoint ignores its input (gate), so the best eligible one is kept"}
    if "gain_over_final" in out and out["gain_over_final"] > out["standard_error"]:
        return out | {"reason": f"step {best['step']} beats the final weights by {out['gain_over_final']:.4f} "
                                f"> 1 SE ({out['standard_error']:.4f})"}
    return out | {"kept": "final", "reason": f"step {best['step']} beats the final weights by "
                  f"{out.get('gain_over_final', float('nan')):.4f}, within 1 SE "
                  f"({out.get('standard_error', float('nan')):.4f}): the final weights are kept"}


def _flat(scores: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out
