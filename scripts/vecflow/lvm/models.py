"""Next-vector models ("LVMs"): map a context of C sentence embeddings (B, C, D) to the next one (B, D).

Five architectures share that signature:

- ``transformer``: input projection D -> d_model, learned positions, causal self-attention, the last
  position's output projected back to D (a small nanoGPT-style encoder over vectors).
- ``gru`` / ``lstm``: a recurrent stack over the projected context, last hidden output projected to D.
- ``amn``: the context mean (a strong baseline) plus an attention residual queried by the last slot.
- ``mlp``: the flattened context through a small MLP.

With ``residual: ridge`` they are a residual over the ridge baseline instead (its weights fitted on the training
windows and stored as buffers). With ``residual: true`` (= ``mean``, the default for new models) the
transformer, gru, lstm and mlp predict a residual over the context mean: ŷ = mean(ctx) + f(ctx) with f's output layer initialised to zero, so an untrained model
IS the context-mean baseline and training can only be selected if it improves on it (the amn is a residual
by construction). Folders saved before this option load as non-residual.

Models return raw vectors; ``predict`` (and the training losses) L2-normalise them. A trained model is a
folder with ``model.safetensors`` + ``config.json`` that ``load_lvm`` rebuilds without any other input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vecflow.core.errors import VecflowError

ARCHITECTURES = ("transformer", "gru", "lstm", "amn", "mlp")
SIZE_KEYS = ("d_model", "layers", "heads", "dropout", "residual")
DEFAULT_SIZES = {"d_model": 64, "layers": 2, "heads": 4, "dropout": 0.1, "residual": True}


class RidgeResidual(nn.Module):
    """ŷ = ridge(ctx) + inner(ctx): a fixed linear map of the flattened context (buffers ``base_weight`` (C·D, D)
    and ``base_bias`` (D,), set from the ridge baseline fitted on the training windows by ``set_base``) plus a
    learned residual whose output layer starts at zero, so training starts AT the ridge baseline."""

    def __init__(self, inner: nn.Module, dim: int, context_length: int):
        super().__init__()
        self.inner = inner
        self.register_buffer("base_weight", torch.zeros(context_length * dim, dim))
        self.register_buffer("base_bias", torch.zeros(dim))
        last = [m for m in inner.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def set_base(self, weights, bias) -> None:
        self.base_weight.copy_(torch.as_tensor(np.asarray(weights), dtype=torch.float32))
        self.base_bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        return contexts.flatten(start_dim=1) @ self.base_weight + self.base_bias + self.inner(contexts)

    def infer(self, contexts: torch.Tensor) -> torch.Tensor:
        return contexts.flatten(start_dim=1) @ self.base_weight + self.base_bias + infer(self.inner, contexts)


class ContextMeanResidual(nn.Module):
    """ŷ = mean(ctx) + inner(ctx), the inner model's output layer zeroed so training starts at the mean."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        last = [m for m in inner.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        return contexts.mean(dim=1) + self.inner(contexts)

    def infer(self, contexts: torch.Tensor) -> torch.Tensor:
        return contexts.mean(dim=1) + infer(self.inner, contexts)


class ContextContrast(nn.Module):
    """ŷ = normalise(inner(ctx)) − alpha · mean(ctx[-slots:]): the prediction moved away from the last context
    chunks it already knows. A model trained toward the next chunk predicts the mean of the plausible next chunks
    (the Large Concept Model's finding for MSE), which lies closer to the context than the true next chunk does;
    ``alpha`` and ``slots`` are chosen after training on the selection split (``choose_contrast`` in
    ``vecflow.lvm.train``), alpha 0 being the model itself."""

    def __init__(self, inner: nn.Module, alpha: float, slots: int):
        super().__init__()
        self.inner, self.alpha, self.slots = inner, float(alpha), int(slots)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        return normalize(self.inner(contexts)) - self.alpha * contexts[:, -self.slots:].mean(dim=1)

    def infer(self, contexts: torch.Tensor) -> torch.Tensor:
        return normalize(infer(self.inner, contexts)) - self.alpha * contexts[:, -self.slots:].mean(dim=1)


def with_contrast(model: nn.Module, contrast: dict | None) -> nn.Module:
    """``model`` wrapped in ``ContextContrast`` when ``contrast`` (a config's ``{"alpha", "slots"}``) moves it."""
    if contrast and float(contrast.get("alpha", 0.0)) > 0:
        return ContextContrast(model, contrast["alpha"], contrast["slots"])
    return model


class UniformMaskDropout(nn.Dropout):
    """``nn.Dropout`` (inverted dropout, keep probability 1 - p) with its mask drawn as ``rand >= p``.

    Same distribution and the same result in eval mode; on the CPU, torch's ``bernoulli_`` behind ``F.dropout``
    draws its mask from the CPU generator one element at a time and was a large share of the default
    transformer's training step, and ``rand >= p`` is cheaper (``vecflow bench lvm``; figures in BENCHMARKS.md,
    goal 5). Other devices use ``F.dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or x.device.type != "cpu":
            return super().forward(x)
        if self.p >= 1.0:
            return x * 0.0
        return x * ((torch.rand_like(x) >= self.p).to(x.dtype) * (1.0 / (1.0 - self.p)))


class TransformerLVM(nn.Module):
    def __init__(self, dim: int, context_length: int, d_model: int, layers: int, heads: int, dropout: float):
        super().__init__()
        self.input_proj = nn.Linear(dim, d_model)
        self.positions = nn.Parameter(torch.zeros(context_length, d_model))
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, dim_feedforward=4 * d_model, dropout=dropout, batch_first=True, norm_first=True
        )
        for name in ("dropout", "dropout1", "dropout2"):  # no parameters: checkpoints are unchanged
            setattr(layer, name, UniformMaskDropout(dropout))
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d_model)
        self.output_proj = nn.Linear(d_model, dim)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(context_length),
                             persistent=False)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        length = contexts.shape[1]
        hidden = self.input_proj(contexts) + self.positions[:length]
        hidden = self.blocks(hidden, mask=self.causal_mask[:length, :length], is_causal=True)
        return self.output_proj(self.final_norm(hidden[:, -1]))

    def infer(self, contexts: torch.Tensor) -> torch.Tensor:
        """``forward`` for inference (eval mode, no autograd), up to float rounding: the output reads only the
        last position, so the last layer computes only that one (a quarter fewer FLOPs at C=5, d_model 64)."""
        length = contexts.shape[1]
        hidden = self.input_proj(contexts) + self.positions[:length]
        *early, last = self.blocks.layers
        for layer in early:
            hidden = layer(hidden, src_mask=self.causal_mask[:length, :length], is_causal=True)
        return self.output_proj(self.final_norm(last_position_layer(last, hidden)))


def last_position_layer(layer: nn.TransformerEncoderLayer, hidden: torch.Tensor) -> torch.Tensor:
    """A pre-norm encoder layer's output (B, d) at the LAST position of ``hidden`` (B, L, d), without dropout.

    Under the causal mask the last position attends to every position, so keys and values come from all of them
    and no mask is needed; queries, the output projection and the feed-forward run for that position only."""
    attention = layer.self_attn
    batch, length, width = hidden.shape
    heads = attention.num_heads
    qkv = F.linear(layer.norm1(hidden), attention.in_proj_weight, attention.in_proj_bias)
    qkv = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)  # (3, B, heads, L, width/heads)
    mixed = F.scaled_dot_product_attention(qkv[0, :, :, -1:], qkv[1], qkv[2]).reshape(batch, width)
    out = hidden[:, -1] + attention.out_proj(mixed)
    return out + layer.linear2(layer.activation(layer.linear1(layer.norm2(out))))


class RecurrentLVM(nn.Module):
    def __init__(self, cell: str, dim: int, d_model: int, layers: int, dropout: float):
        super().__init__()
        rnn_class = nn.GRU if cell == "gru" else nn.LSTM
        self.input_proj = nn.Linear(dim, d_model)
        self.rnn = rnn_class(d_model, d_model, num_layers=layers, batch_first=True,
                             dropout=dropout if layers > 1 else 0.0)
        self.output_proj = nn.Linear(d_model, dim)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.rnn(self.input_proj(contexts))
        return self.output_proj(outputs[:, -1])


class AttentionMeanLVM(nn.Module):
    """Context mean plus a residual: attention over the slots, queried by the last slot."""

    def __init__(self, dim: int, d_model: int, dropout: float):
        super().__init__()
        self.query = nn.Linear(dim, d_model)
        self.key = nn.Linear(dim, d_model)
        self.value = nn.Linear(dim, d_model)
        self.dropout = nn.Dropout(dropout)
        self.residual_out = nn.Linear(d_model, dim)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        baseline = contexts.mean(dim=1)
        query = self.query(contexts[:, -1:])                      # (B, 1, d)
        scores = query @ self.key(contexts).transpose(1, 2)        # (B, 1, C)
        weights = torch.softmax(scores / self.key.out_features ** 0.5, dim=-1)
        attended = (self.dropout(weights) @ self.value(contexts)).squeeze(1)
        return baseline + self.residual_out(attended)


class MlpLVM(nn.Module):
    def __init__(self, dim: int, context_length: int, d_model: int, layers: int, dropout: float):
        super().__init__()
        blocks: list[nn.Module] = []
        width = context_length * dim
        for _ in range(max(1, layers)):
            blocks += [nn.Linear(width, d_model), nn.GELU(), nn.Dropout(dropout)]
            width = d_model
        blocks.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, contexts: torch.Tensor) -> torch.Tensor:
        return self.net(contexts.flatten(start_dim=1))


def model_sizes(given: Mapping) -> dict:
    """An LVM's sizes (d_model, layers, heads, dropout, residual) from ``given`` (train-lvm's
    ``LvmTrainSettings.model_sizes()``, a saved folder's config.json, a benchmark's sizes), ``DEFAULT_SIZES``
    for those it lacks, checked."""
    sizes = {**DEFAULT_SIZES, **{key: given[key] for key in DEFAULT_SIZES.keys() & given.keys()}}
    for key in ("d_model", "layers", "heads"):
        if not isinstance(sizes[key], int) or sizes[key] < 1:
            raise VecflowError(f"settings: field '{key}': expected a positive integer, got {sizes[key]!r}")
    if not 0.0 <= float(sizes["dropout"]) < 1.0:
        raise VecflowError(f"settings: field 'dropout': expected a value in [0, 1), got {sizes['dropout']!r}")
    if sizes["residual"] not in (True, False, "mean", "ridge"):
        raise VecflowError(f"settings: field 'residual': expected true/false, 'mean' or 'ridge', got {sizes['residual']!r}")
    return sizes


def build_model(arch: str, dim: int, context_length: int, given_sizes: Mapping) -> nn.Module:
    """Build an untrained LVM of architecture ``arch`` for D=``dim`` vectors and C=``context_length`` slots, of
    the sizes ``model_sizes(given_sizes)``."""
    sizes = model_sizes(given_sizes)
    d_model, layers, heads, dropout = sizes["d_model"], sizes["layers"], sizes["heads"], float(sizes["dropout"])
    if arch == "amn":
        return AttentionMeanLVM(dim, d_model, dropout)
    if arch == "transformer":
        if d_model % heads:
            raise VecflowError(f"settings: field 'd_model': {d_model} is not divisible by heads={heads}")
        model = TransformerLVM(dim, context_length, d_model, layers, heads, dropout)
    elif arch in ("gru", "lstm"):
        model = RecurrentLVM(arch, dim, d_model, layers, dropout)
    elif arch == "mlp":
        model = MlpLVM(dim, context_length, d_model, layers, dropout)
    else:
        choices = ", ".join(ARCHITECTURES)
        raise VecflowError(f"settings: field 'arch': unknown architecture '{arch}' (choose from {choices})")
    if sizes["residual"] == "ridge":
        return RidgeResidual(model, dim, context_length)
    return ContextMeanResidual(model) if sizes["residual"] else model


def model_config(arch: str, dim: int, context_length: int, given_sizes: Mapping, **extra) -> dict:
    """The config.json content that lets ``load_lvm`` rebuild the model: arch, sizes, dim, context length."""
    return {"arch": arch, "dim": int(dim), "context_length": int(context_length), **model_sizes(given_sizes),
            **extra}


def save_lvm(out_dir: str | Path, model: nn.Module, config: dict) -> None:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir`` (inside an atomic_dir by the caller)."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"arch": config["arch"]})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_lvm(model_dir: str | Path, device="cpu") -> nn.Module:
    """Rebuild a saved LVM from its folder (config.json + model.safetensors), in eval mode on ``device``."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    config_path, weights_path = model_dir / "config.json", model_dir / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.exists():
            raise VecflowError(f"{path}: file not found (not an LVM folder)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for key in ("arch", "dim", "context_length"):
        if key not in config:
            raise VecflowError(f"{config_path}: field '{key}': missing")
    model = build_model(config["arch"], config["dim"], config["context_length"],
                        {"residual": False, **config})  # folders from before the option are not residual
    model = with_contrast(model, config.get("contrast"))
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as exc:
        raise VecflowError(f"{weights_path}: weights do not match {config_path} ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()


def normalize(vectors: torch.Tensor) -> torch.Tensor:
    return F.normalize(vectors, p=2, dim=-1)


def infer(model: nn.Module, contexts: torch.Tensor) -> torch.Tensor:
    """The model's raw output for inference: its ``infer`` (the same numbers as ``forward`` in eval mode, computed
    with less work) where it has one, else ``forward``."""
    return model.infer(contexts) if hasattr(model, "infer") else model(contexts)


def predict(model: nn.Module, contexts: np.ndarray, batch_size: int = 256, device="cpu") -> np.ndarray:
    """L2-normalised predictions (N, D) for contexts (N, C, D), in eval mode (no dropout) under
    ``torch.inference_mode``, batch by batch. A model in training mode is switched to eval and back; one already
    in eval mode (``load_lvm``'s, the server's) is left as it is (switching costs about as much as a small forward)."""
    was_training = model.training
    if was_training:
        model.eval()
    outputs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(contexts), batch_size):
                batch = torch.as_tensor(np.asarray(contexts[start:start + batch_size]), dtype=torch.float32,
                                        device=device)
                outputs.append(normalize(infer(model, batch)).cpu().numpy())
    finally:
        if was_training:
            model.train(True)
    dim = contexts.shape[-1]
    return np.concatenate(outputs) if outputs else np.zeros((0, dim), dtype=np.float32)
