"""``vecflow bench lvm``: achieved FLOP/s of ``vecflow.lvm.train_loop.train_one_epoch`` (matmul FLOPs counted:
torch FlopCounterMode, whose forward count equals ``transformer_lvm_flops``) vs this machine's fp32 and bf16
matmul peak measured in the same run."""

from __future__ import annotations

import time
from pathlib import Path

from vecflow.bench.common import record, timed


def transformer_lvm_flops(batch: int, context: int, dim: int, d_model: int, layers: int) -> int:
    """Forward FLOPs of TransformerLVM (a multiply-add = 2 FLOPs; matmuls only): input projection, per layer
    QKV + output projection + 4x FFN (24·C·d²) and attention scores + weighted sum (4·C²·d), the output
    projection of the last position."""
    per_sample = (2 * context * dim * d_model + layers * (24 * context * d_model ** 2 + 4 * context ** 2 * d_model)
                  + 2 * d_model * dim)
    return batch * per_sample


def step_flops(model, contexts) -> int:
    """Matmul FLOPs of one forward + backward pass on ``contexts`` (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    with FlopCounterMode(display=False) as counter:
        model(contexts).square().sum().backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def matmul_peak(dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """FLOP/s of repeated n×n matmuls in ``dtype`` (best of the timed repeats)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def lvm_step_rate(dim: int, context: int, sizes: dict, batch: int, steps: int) -> dict:
    """Achieved matmul FLOP/s of ``train_one_epoch`` (one warm-up epoch, one timed epoch of ``steps`` steps)."""
    import torch

    from vecflow.lvm.models import build_model
    from vecflow.lvm.presets import DEFAULTS
    from vecflow.lvm.settings import LvmTrainSettings
    from vecflow.lvm.train_data import WindowTensors
    from vecflow.lvm.train_loop import epoch_generator, make_optimizer, train_one_epoch

    run = LvmTrainSettings.parse({"preset": "P1", "arch": "transformer", "epochs": 1, "batch_size": batch,
                                  "learning_rate": 5e-4, "weight_decay": 0.01, "grad_clip": 1.0})  # train-lvm's
    torch.manual_seed(0)
    model = build_model("transformer", dim, context, sizes)
    optimizer = make_optimizer(model, run.learning_rate, run.weight_decay, "cpu")
    rows = batch * steps
    bank = torch.nn.functional.normalize(torch.randn(rows * (context + 1), dim), dim=-1)
    windows = WindowTensors(bank, torch.arange(rows * (context + 1)).reshape(rows, context + 1),
                            torch.full((rows, 2), -1, dtype=torch.long))  # windows gather from the bank by row
    train_one_epoch(model, optimizer, windows, dict(DEFAULTS), run, epoch_generator(0, 0), "cpu")  # warm-up
    seconds, _ = timed(lambda: train_one_epoch(model, optimizer, windows, dict(DEFAULTS), run,
                                                  epoch_generator(0, 1), "cpu"))
    flops_per_step = step_flops(model, bank[windows.rows[:batch, :-1]])
    return {"d_model": sizes["d_model"], "layers": sizes["layers"], "batch": batch, "steps": steps,
            "seconds": float(seconds),
            "flops_per_step": flops_per_step, "flops_per_s": flops_per_step * steps / seconds,
            "forward_flops": transformer_lvm_flops(batch, context, dim, sizes["d_model"], sizes["layers"])}


def schema_lvm_sizes() -> dict:
    """The transformer a user gets when the config sets nothing: ``lvm.train``'s defaults (those of the config
    schema: ``LvmTrainSettings``'s, checked against it by tests/test_settings_models.py)."""
    from vecflow.lvm.settings import LvmTrainSettings

    return LvmTrainSettings.parse({"preset": "P1", "arch": "transformer", "epochs": 1, "batch_size": 1,
                                   "learning_rate": 5e-4}).model_sizes()


def bench_lvm(size: str, out_dir: Path | None, batch: int | None = None, **_) -> dict:
    """The schema's default transformer (d_model 256, 4 layers at the time of writing) at batch 256 (full); the
    size sweep shows where the fraction of peak comes from (the demo config's d_model 64 among them)."""
    import torch

    full = size == "full"
    batch = batch or (256 if full else 32)
    dim, context = (384 if full else 32), 5
    sizes = schema_lvm_sizes() if full else {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1, "residual": True}
    main_run = lvm_step_rate(dim, context, sizes, batch, 20 if full else 3)
    sweep = [lvm_step_rate(dim, context, {**sizes, "d_model": d, "layers": 2}, b, 10 if full else 2)
             for d, b in ((64, batch), (64, 4 * batch), (512, batch))]  # where the fraction of peak comes from
    n = 1024 if full else 256
    peak32 = matmul_peak(torch.float32, n, 1.0 if full else 0.2)
    peak16 = matmul_peak(torch.bfloat16, n, 1.0 if full else 0.2)
    for point in sweep:
        point["fraction_of_fp32_peak"] = point["flops_per_s"] / peak32
    print(f"[bench lvm] size sweep (2 layers): " + "; ".join(f"d_model {p['d_model']} batch {p['batch']}: "
                                                 f"{p['fraction_of_fp32_peak']:.1%} of fp32 peak" for p in sweep))
    return record("lvm", workload={"arch": "transformer", **sizes, "dim": dim, "context": context, "batch": batch,
                                   "steps": main_run["steps"], "loss": "lvm_presets.DEFAULTS (MSE)",
                                   "optimizer": "AdamW", "flops_per_step": main_run["flops_per_step"],
                                   "analytic_forward_flops": main_run["forward_flops"],
                                   "flop_count": "matmul FLOPs of forward + backward (torch FlopCounterMode; its "
                                   "forward count equals transformer_lvm_flops)"},
                  unit="FLOP/s", peer=f"torch.matmul peak fp32 ({n}x{n})", peer_value=peak32,
                  ours="vecflow.lvm.train_loop.train_one_epoch (fp32)", ours_value=main_run["flops_per_s"], goal=0.35,
                  check={"steps_per_s": main_run["steps"] / main_run["seconds"]},
                  extra={"peak_bf16_flops": peak16, "fraction_of_bf16_peak": main_run["flops_per_s"] / peak16,
                         "seconds": main_run["seconds"], "size_sweep": sweep}, out_dir=out_dir)
