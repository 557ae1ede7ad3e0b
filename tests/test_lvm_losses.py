import pytest
import torch
import torch.nn.functional as F

from vecflow.lvm.losses import (
    LossBatch,
    adaptive_boost,
    anti_copy_loss,
    compute_losses,
    directional_loss,
    future_loss,
    guard_to_mse_ratio,
    ranking_nce_loss,
    rollout_loss,
)
from vecflow.lvm.models import build_model
from vecflow.lvm.presets import DEFAULTS

DIM, CONTEXT = 8, 3


def unit(*shape, seed=0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def orthogonal_batch(batch: int = 4) -> LossBatch:
    """Every context slot, target and future is a distinct basis vector: all pairwise cosines are 0."""
    eye = torch.eye(DIM)
    contexts = eye[:CONTEXT].expand(batch, CONTEXT, DIM).clone()
    targets = eye[CONTEXT].expand(batch, DIM).clone()
    futures = eye[CONTEXT + 1:CONTEXT + 3].expand(batch, 2, DIM).clone()
    return LossBatch(contexts, targets, futures, torch.ones(batch, 2, dtype=torch.bool))


def test_copying_the_last_slot_gives_a_positive_directional_loss_and_the_oracle_none():
    batch = orthogonal_batch()
    last = batch.contexts[:, -1]
    assert directional_loss(last, batch.targets, last, margin=0.01) == pytest.approx(1.01)
    assert directional_loss(batch.targets, batch.targets, last, margin=0.01) == 0.0


def test_anti_copy_guards_every_context_slot_not_only_the_last():
    batch = orthogonal_batch()
    first_slot = batch.contexts[:, 0]
    assert directional_loss(first_slot, batch.targets, batch.contexts[:, -1], margin=0.0) == 0.0
    assert anti_copy_loss(first_slot, batch.targets, batch.contexts, margin=0.0) == pytest.approx(1.0)
    assert anti_copy_loss(batch.targets, batch.targets, batch.contexts, margin=0.0) == 0.0


def test_future_loss_punishes_predicting_ahead_and_skips_missing_futures():
    batch = orthogonal_batch()
    ahead = batch.futures[:, 0]
    assert future_loss(ahead, batch.targets, batch.futures, batch.future_mask, margin=0.0) == pytest.approx(0.5)
    assert future_loss(batch.targets, batch.targets, batch.futures, batch.future_mask, margin=0.0) == 0.0
    none_exist = torch.zeros_like(batch.future_mask)
    assert future_loss(ahead, batch.targets, batch.futures, none_exist, margin=0.0) == 0.0


def test_ranking_nce_is_the_cross_entropy_of_the_target_among_context_and_existing_futures():
    batch = orthogonal_batch()
    tau = 0.5
    # predicting the target: logits 1/τ for it and 0 for the 3 slots and 2 futures
    expected = -torch.log(torch.exp(torch.tensor(1 / tau)) / (torch.exp(torch.tensor(1 / tau)) + 5))
    got = ranking_nce_loss(batch.targets, batch.targets, batch.contexts, batch.futures, batch.future_mask, tau)
    assert got == pytest.approx(float(expected), abs=1e-5)
    # missing futures are not candidates
    none_exist = torch.zeros_like(batch.future_mask)
    got = ranking_nce_loss(batch.targets, batch.targets, batch.contexts, batch.futures, none_exist, tau)
    expected = -torch.log(torch.exp(torch.tensor(1 / tau)) / (torch.exp(torch.tensor(1 / tau)) + 3))
    assert got == pytest.approx(float(expected), abs=1e-5)
    # copying the last slot is punished more than predicting the target
    copy = ranking_nce_loss(batch.contexts[:, -1], batch.targets, batch.contexts, batch.futures, batch.future_mask, tau)
    assert copy > got


def test_adaptive_boost_is_high_only_where_the_target_resembles_the_last_slot():
    y = unit(2, DIM)
    similar, unrelated = y, F.normalize(torch.stack([y[1], y[0]]) - y, dim=-1)
    assert (adaptive_boost(similar, y) > 0.99).all()
    assert (adaptive_boost(unrelated, y) < 0.01).all()


class ShiftModel(torch.nn.Module):
    """A linear map from the last slot: enough to check that gradients flow through the rollout."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(DIM, DIM)

    def forward(self, contexts):
        return self.linear(contexts[:, -1])


def test_rollout_is_differentiable_through_later_steps():
    torch.manual_seed(0)
    model = ShiftModel()
    contexts, targets, futures = unit(4, CONTEXT, DIM), unit(4, DIM, seed=1), unit(4, 2, DIM, seed=2)
    first_pred = unit(4, DIM, seed=3).requires_grad_()  # a leaf: parameters only get gradient from steps >= 2
    mask = torch.ones(4, 2, dtype=torch.bool)
    loss = rollout_loss(model, contexts, first_pred, targets, futures, mask, steps=3)
    loss.backward()
    assert model.linear.weight.grad is not None and model.linear.weight.grad.abs().sum() > 0
    assert first_pred.grad.abs().sum() > 0

    model.zero_grad()
    single = rollout_loss(model, contexts, first_pred, targets, futures, mask, steps=1)
    assert single.item() == pytest.approx(F.mse_loss(first_pred, targets).item())
    assert not any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_rollout_compares_step_h_with_chunk_t_plus_h_minus_1_and_masks_past_the_end():
    class Echo(torch.nn.Module):  # predicts ctx[-1]: feeds the truth back when given the truth
        def forward(self, contexts):
            return contexts[:, -1] * 1.0

    batch = orthogonal_batch(2)
    # perfect first prediction, but the fed-back rollout keeps repeating y: step 2 misses chunk t+1 entirely
    only_first_future = torch.tensor([[True, False], [True, False]])
    loss = rollout_loss(Echo(), batch.contexts, batch.targets, batch.targets, batch.futures, only_first_future, 3)
    step_two_error = 2.0 / DIM  # ||e_t - e_{t+1}||^2 / D
    assert loss.item() == pytest.approx((0.0 + step_two_error) / 2)  # step 3 is beyond the article: masked


def test_compute_losses_weighs_terms_and_only_keeps_the_rollout_graph_when_used():
    torch.manual_seed(0)
    model = build_model("mlp", DIM, CONTEXT, {"d_model": 16, "layers": 1, "heads": 1, "dropout": 0.0})
    batch = LossBatch(unit(5, CONTEXT, DIM), unit(5, DIM, seed=1), unit(5, 2, DIM, seed=2),
                      torch.ones(5, 2, dtype=torch.bool))
    weights = {**DEFAULTS, "lambda_dir": 0.5, "lambda_fut": 0.25, "rollout_h": 3, "margin_dir": 0.01}
    terms = compute_losses(model, batch, weights)
    expected = terms["mse"] + 0.5 * terms["dir"] + 0.25 * terms["fut"]
    assert terms["total"].item() == pytest.approx(expected.item())
    assert terms["roll"].grad_fn is None  # measured, but lambda_roll = 0: no graph kept
    assert compute_losses(model, batch, {**weights, "lambda_roll": 0.1})["roll"].grad_fn is not None
    assert set(terms) >= {"mse", "cos", "dir", "ac", "fut", "roll", "total", "dir_boost"}


def test_adaptive_directional_weight_is_stronger_on_high_similarity_samples():
    batch = orthogonal_batch()
    batch.targets = F.normalize(batch.contexts[:, -1] + 0.1 * batch.targets, dim=-1)  # y ~ ctx[-1]
    model = ShiftModel()
    weights = {**DEFAULTS, "lambda_dir": 1.0, "margin_dir": 0.5}
    plain = compute_losses(model, batch, weights)
    adaptive = compute_losses(model, batch, {**weights, "adaptive_dir": True})
    assert adaptive["dir_boost"].item() == pytest.approx(2.0, abs=1e-3)
    assert adaptive["dir"].item() == pytest.approx(2 * plain["dir"].item(), rel=1e-3)


def test_guard_to_mse_ratio():
    terms = {"mse": 0.002, "cos": 0.5, "dir": 0.1, "ac": 0.0, "fut": 0.2, "roll": 0.004}
    weights = {**DEFAULTS, "lambda_dir": 0.002, "lambda_fut": 0.002, "lambda_roll": 0.1}
    assert guard_to_mse_ratio(terms, weights) == pytest.approx((0.0002 + 0.0004 + 0.0004) / 0.002)
    assert guard_to_mse_ratio(terms, DEFAULTS) == 0.0
