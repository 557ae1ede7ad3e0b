import json

import numpy as np
import pytest
import torch

from vecflow.core.errors import VecflowError
from vecflow.lvm.models import ARCHITECTURES, build_model, load_lvm, model_config, predict, save_lvm

DIM, CONTEXT = 12, 4
SIZES = {"d_model": 16, "layers": 2, "heads": 4, "dropout": 0.1, "residual": False}


def random_contexts(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    contexts = rng.normal(size=(count, CONTEXT, DIM)).astype(np.float32)
    return contexts / np.linalg.norm(contexts, axis=-1, keepdims=True)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_forward_maps_context_to_one_vector(arch):
    torch.manual_seed(0)
    model = build_model(arch, DIM, CONTEXT, SIZES)
    out = model(torch.from_numpy(random_contexts(5)))
    assert out.shape == (5, DIM)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_output_depends_on_the_context_order(arch):
    torch.manual_seed(0)
    model = build_model(arch, DIM, CONTEXT, {**SIZES, "dropout": 0.0}).eval()
    contexts = torch.from_numpy(random_contexts(3))
    reordered = contexts.flip(1)
    if arch == "amn":  # the mean is order-free, but the residual is queried by the last slot
        assert not torch.allclose(model(contexts), model(reordered))
    else:
        assert not torch.allclose(model(contexts), model(reordered), atol=1e-5)


def test_transformer_attention_is_causal():
    torch.manual_seed(0)
    model = build_model("transformer", DIM, CONTEXT, {**SIZES, "dropout": 0.0}).eval()
    contexts = torch.from_numpy(random_contexts(2))
    changed = contexts.clone()
    changed[:, -1] = torch.from_numpy(random_contexts(2, seed=9))[:, 0]
    hidden = lambda x: model.blocks(model.input_proj(x) + model.positions, mask=model.causal_mask, is_causal=True)
    with torch.no_grad():
        before, after = hidden(contexts), hidden(changed)
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6)  # earlier positions never see the last slot
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_gives_identical_predictions(arch, tmp_path):
    torch.manual_seed(1)
    model = build_model(arch, DIM, CONTEXT, SIZES)
    save_lvm(tmp_path / "lvm", model, model_config(arch, DIM, CONTEXT, SIZES, preset="P1"))
    loaded = load_lvm(tmp_path / "lvm", "cpu")
    contexts = random_contexts(7)
    expected = predict(model, contexts, batch_size=3)
    np.testing.assert_array_equal(predict(loaded, contexts, batch_size=3), expected)
    config = json.loads((tmp_path / "lvm" / "config.json").read_text())
    assert config["arch"] == arch and config["dim"] == DIM and config["context_length"] == CONTEXT
    assert config["d_model"] == 16 and config["preset"] == "P1"
    assert not loaded.training


@pytest.mark.parametrize("arch", ["transformer", "gru", "mlp"])
def test_residual_model_starts_at_the_context_mean_and_learns_away_from_it(arch, tmp_path):
    torch.manual_seed(0)
    model = build_model(arch, DIM, CONTEXT, {**SIZES, "residual": True})
    contexts = torch.from_numpy(random_contexts(6))
    torch.testing.assert_close(model(contexts), contexts.mean(dim=1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        (1 - torch.nn.functional.cosine_similarity(model(contexts), contexts[:, 0], dim=-1)).mean().backward()
        optimizer.step()
    assert not torch.allclose(model(contexts), contexts.mean(dim=1), atol=1e-4)
    save_lvm(tmp_path / "lvm", model, model_config(arch, DIM, CONTEXT, {**SIZES, "residual": True}))
    assert json.loads((tmp_path / "lvm" / "config.json").read_text())["residual"] is True
    np.testing.assert_allclose(predict(load_lvm(tmp_path / "lvm"), contexts.numpy()),
                               predict(model, contexts.numpy()), atol=1e-6)


def test_folder_without_the_residual_key_loads_as_before(tmp_path):
    torch.manual_seed(2)
    model = build_model("mlp", DIM, CONTEXT, SIZES)
    config = model_config("mlp", DIM, CONTEXT, SIZES)
    del config["residual"]
    save_lvm(tmp_path / "old", model, config)
    contexts = random_contexts(4)
    np.testing.assert_array_equal(predict(load_lvm(tmp_path / "old"), contexts), predict(model, contexts))


def test_predict_returns_unit_vectors_and_keeps_training_mode():
    torch.manual_seed(0)
    model = build_model("mlp", DIM, CONTEXT, SIZES).train()
    out = predict(model, random_contexts(10), batch_size=4)
    assert out.shape == (10, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert model.training


def test_build_model_rejects_unknown_arch_and_bad_sizes():
    with pytest.raises(VecflowError, match="field 'arch': unknown architecture 'cnn'"):
        build_model("cnn", DIM, CONTEXT, SIZES)
    with pytest.raises(VecflowError, match="field 'd_model': 18 is not divisible by heads=4"):
        build_model("transformer", DIM, CONTEXT, {**SIZES, "d_model": 18})
    with pytest.raises(VecflowError, match="field 'layers': expected a positive integer"):
        build_model("gru", DIM, CONTEXT, {**SIZES, "layers": 0})


def test_load_lvm_names_the_missing_or_mismatched_file(tmp_path):
    with pytest.raises(VecflowError, match="config.json: file not found"):
        load_lvm(tmp_path, "cpu")
    model = build_model("gru", DIM, CONTEXT, SIZES)
    save_lvm(tmp_path, model, model_config("gru", DIM, CONTEXT, SIZES))
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "d_model": 32}))
    with pytest.raises(VecflowError, match="model.safetensors: weights do not match"):
        load_lvm(tmp_path, "cpu")
    (tmp_path / "config.json").write_text(json.dumps({"arch": "gru", "dim": DIM}))
    with pytest.raises(VecflowError, match="config.json: field 'context_length': missing"):
        load_lvm(tmp_path, "cpu")


def test_ridge_residual_starts_at_its_linear_base_and_saves_it(tmp_path):
    torch.manual_seed(3)
    model = build_model("transformer", DIM, CONTEXT, {**SIZES, "residual": "ridge"})
    rng = np.random.default_rng(0)
    weights, bias = rng.normal(size=(CONTEXT * DIM, DIM)).astype(np.float32), rng.normal(size=DIM).astype(np.float32)
    model.set_base(weights, bias)
    contexts = random_contexts(5)
    expected = contexts.reshape(5, -1) @ weights + bias
    np.testing.assert_allclose(model(torch.from_numpy(contexts)).detach().numpy(), expected, atol=1e-4)
    save_lvm(tmp_path / "lvm", model, model_config("transformer", DIM, CONTEXT, {**SIZES, "residual": "ridge"}))
    np.testing.assert_allclose(predict(load_lvm(tmp_path / "lvm"), contexts), predict(model, contexts), atol=1e-6)
    with pytest.raises(VecflowError, match="field 'residual'"):
        build_model("mlp", DIM, CONTEXT, {**SIZES, "residual": "median"})


def test_uniform_mask_dropout_is_inverted_dropout_with_keep_probability_1_minus_p():
    from vecflow.lvm.models import UniformMaskDropout

    torch.manual_seed(0)
    x = torch.rand(200_000) + 0.5  # no zeros: a dropped element is exactly 0
    drop = UniformMaskDropout(0.1).train()
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 0.005  # binomial sd ~ 0.0007
    assert torch.allclose(y[kept], x[kept] / 0.9)
    assert abs(y.mean().item() - x.mean().item()) < 0.01  # the expectation is kept
    assert torch.equal(drop.eval()(x), x)  # eval: identity
    assert torch.equal(UniformMaskDropout(0.0).train()(x), x)
    grad = torch.ones_like(x, requires_grad=True)
    drop.train()(grad).sum().backward()
    dropped = grad.grad == 0
    assert 0 < dropped.float().mean().item() < 0.2 and torch.allclose(grad.grad[~dropped], torch.tensor(1 / 0.9))


def test_the_transformer_trains_with_uniform_mask_dropout_and_keeps_its_checkpoint_keys():
    from vecflow.lvm.models import UniformMaskDropout

    model = build_model("transformer", 16, 5, {"d_model": 32, "layers": 2, "heads": 4, "dropout": 0.1,
                                               "residual": False})
    layers = model.blocks.layers
    assert all(isinstance(getattr(layer, name), UniformMaskDropout)
               for layer in layers for name in ("dropout", "dropout1", "dropout2"))
    plain = torch.nn.TransformerEncoderLayer(32, 4, dim_feedforward=128, dropout=0.1, batch_first=True,
                                             norm_first=True)
    assert set(layers[0].state_dict()) == set(plain.state_dict())
    contexts = torch.randn(8, 5, 16)
    model.train()
    torch.manual_seed(1)
    first = model(contexts)
    torch.manual_seed(1)
    assert torch.equal(first, model(contexts))  # seeded: reproducible
    assert not torch.equal(first, model(contexts))  # and dropout is on in training
