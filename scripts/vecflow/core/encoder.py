"""Sentence encoder: an HF encoder folder (MiniLM by default) with mean pooling and L2 normalisation.

All texts are tokenized first and sorted by their TOKEN count before batching, so a batch pads to almost
nothing (sorting by characters, as sentence-transformers does, left ~48 % padding on WikiText chunks: numbers
and ``@-@`` split into many tokens; see BENCHMARKS.md). Batches are encoded under ``torch.inference_mode`` and
put back in input order, so the output row i is always the vector of ``texts[i]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vecflow.core.devices import pick_device
from vecflow.core.errors import VecflowError


class SentenceEncoder:
    def __init__(self, model_dir: str | Path, device: str = "auto", max_length: int = 256):
        import torch  # noqa: F401
        from transformers import AutoModel, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise VecflowError(f"{model_dir}: not an HF model folder (no config.json)")
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).to(self.device).eval()
        self.max_length = min(max_length, getattr(self.tokenizer, "model_max_length", max_length) or max_length)
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        import torch
        from tqdm import tqdm

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        features = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        keys = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in features]
        order = np.argsort([-len(ids) for ids in features["input_ids"]], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="encode", disable=not progress, mininterval=5):
                idx = order[start : start + batch_size]
                batch = self._pad({key: [features[key][i] for i in idx] for key in keys}).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[idx] = pooled.cpu().numpy()
        return out

    def _pad(self, features: dict):
        """Pad token lists to the longest row (on the tokenizer's padding side): ids with the pad id, masks 0."""
        import torch
        from transformers import BatchEncoding

        width = max(len(ids) for ids in features["input_ids"])
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
        tensors = {}
        for key, rows in features.items():
            tensor = torch.full((len(rows), width), pad_values[key], dtype=torch.long)
            for r, row in enumerate(rows):
                values = torch.tensor(row, dtype=torch.long)
                if self.tokenizer.padding_side == "left":
                    tensor[r, width - len(row):] = values
                else:
                    tensor[r, : len(row)] = values
            tensors[key] = tensor
        return BatchEncoding(tensors)
