"""Dialogue summarizers at inference time: load a trained folder (seq2seq or causal) and summarize.

This module holds no training code (no optimizer, no Optuna), so the server and ``predict`` import only it.

A trained summarizer folder is an HF model folder (model, tokenizer, ``generation_config.json``) plus
``vecflow_summarizer.json``, the settings that training used and inference must repeat (no train/serve skew)::

    {"kind": "seq2seq" | "causal", "max_source_length": 256, "max_target_length": 64,
     "system_message": "..." | null, "user_template": "...{dialogue}..." | null}

Folders without that file are read as seq2seq (any HF seq2seq model), with ``max_source_length`` 512.

- seq2seq: ``model.generate`` on the (truncated) dialogue with the saved generation config.
- causal: the dialogue goes through the LM's chat template with an explicit system message (never the
  template's default one) and the generation prompt; batches are LEFT-padded so that every row's new tokens
  start at the same position, the KV cache is on, and only the new tokens are decoded.

Decoding skips special tokens. Speaker tags (``#Person1#``) are normal tokens (seq2seq, added by
``vecflow.data.speakers``) or plain text (byte-level BPE of causal LMs), so they survive it.
"""

from __future__ import annotations

import json
from pathlib import Path

from vecflow.core.errors import VecflowError

SPEC_FILE = "vecflow_summarizer.json"
KINDS = ("seq2seq", "causal")
DEFAULT_SYSTEM_MESSAGE = (
    "You summarize dialogues. Write a short summary in the third person, in one to three sentences, and refer "
    "to the speakers exactly as they appear in the dialogue (#Person1#, #Person2#, ...)."
)
DEFAULT_USER_TEMPLATE = "Summarize this dialogue:\n\n{dialogue}"


# ---------------------------------------------------------------------------------------------- spec
def write_spec(folder: str | Path, spec: dict) -> None:
    """Write ``vecflow_summarizer.json`` into a (temporary) model folder."""
    if spec.get("kind") not in KINDS:
        raise VecflowError(f"summarizer spec: field 'kind': expected one of {', '.join(KINDS)}, got {spec.get('kind')!r}")
    Path(folder, SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_spec(folder: str | Path) -> dict:
    """The folder's spec; a folder without one is a plain HF seq2seq model."""
    path = Path(folder, SPEC_FILE)
    if not path.exists():
        return {"kind": "seq2seq", "max_source_length": 512, "max_target_length": 128}
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VecflowError(f"{path}: not a valid summarizer spec ({exc}); re-run the training rule") from None
    if spec.get("kind") not in KINDS:
        raise VecflowError(f"{path}: field 'kind': expected one of {', '.join(KINDS)}, got {spec.get('kind')!r}")
    if not isinstance(spec.get("max_source_length"), int) or spec["max_source_length"] < 1:
        raise VecflowError(f"{path}: field 'max_source_length': expected a positive integer")
    return spec


# -------------------------------------------------------------------------------------------- prompts
def chat_messages(dialogue: str, system_message: str | None, user_template: str | None,
                  summary: str | None = None) -> list[dict]:
    """System + user (+ assistant) messages for a causal summarizer; the system message is always explicit."""
    messages = [
        {"role": "system", "content": system_message or DEFAULT_SYSTEM_MESSAGE},
        {"role": "user", "content": (user_template or DEFAULT_USER_TEMPLATE).format(dialogue=dialogue)},
    ]
    if summary is not None:
        messages.append({"role": "assistant", "content": summary})
    return messages


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (byte-level BPE decodes back to the same characters)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def prompt_ids(tokenizer, dialogue: str, spec: dict) -> list[int]:
    """Token ids of the chat prompt (system, user with the truncated dialogue, assistant header)."""
    dialogue = truncate_tokens(tokenizer, dialogue, int(spec["max_source_length"]))
    text = tokenizer.apply_chat_template(
        chat_messages(dialogue, spec.get("system_message"), spec.get("user_template")),
        tokenize=False, add_generation_prompt=True,
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_id(tokenizer) -> int:
    """The token that ends an assistant turn (``<|im_end|>`` for ChatML templates, else eos)."""
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id is not None:
            if token in tokenizer.get_vocab():
                return token_id
    if tokenizer.eos_token_id is None:
        raise VecflowError("causal summarizer: the tokenizer has neither an end-of-turn nor an eos token")
    return tokenizer.eos_token_id


# ------------------------------------------------------------------------------------------ generation
def generate_seq2seq(model, tokenizer, dialogues: list[str], generation_config, max_source_length: int,
                     batch_size: int, device, bf16: bool = False) -> list[str]:
    """Summaries from ``model.generate``, longest dialogues first (less padding), returned in input order."""
    import torch

    model.eval()
    order = sorted(range(len(dialogues)), key=lambda i: -len(dialogues[i]))
    out = [""] * len(dialogues)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer([dialogues[i] for i in idx], max_length=max_source_length, truncation=True,
                              padding=True, return_tensors="pt", return_token_type_ids=False).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                generated = model.generate(**batch, generation_config=generation_config)
            for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                out[i] = text.strip()
    return out


def generate_causal(model, tokenizer, dialogues: list[str], spec: dict, generation_config, batch_size: int,
                    device, bf16: bool = False) -> list[str]:
    """Batched greedy/beam generation with left padding and the KV cache; only new tokens are decoded."""
    import torch

    model.eval()
    prompts = [prompt_ids(tokenizer, d, spec) for d in dialogues]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_id(tokenizer)
    out = [""] * len(dialogues)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):  # left padding: the prompt ends where generation starts
                ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[row, width - len(prompts[i]):] = 1
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                generated = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                           generation_config=generation_config)
            texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                out[i] = text.strip()
    return out


def causal_generation_config(gen: dict, tokenizer):
    """A ``GenerationConfig`` for a causal summarizer: stops at the end of the assistant turn."""
    from transformers import GenerationConfig

    eot = end_of_turn_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot
    return GenerationConfig(**gen, eos_token_id=eot, pad_token_id=pad, bos_token_id=tokenizer.bos_token_id)


# ---------------------------------------------------------------------------------------------- load
class Summarizer:
    """A loaded summarizer folder: ``summarize(dialogues) -> summaries`` with the settings it was trained with."""

    def __init__(self, folder: str | Path, device="cpu", batch_size: int = 8, bf16: bool = False):
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, GenerationConfig

        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise VecflowError(f"{folder}: not an HF model folder (no config.json)")
        self.folder, self.spec = folder, read_spec(folder)
        self.kind, self.max_source_length = self.spec["kind"], int(self.spec["max_source_length"])
        self.device = _device(device)
        self.batch_size, self.bf16 = batch_size, bf16
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        loader = AutoModelForCausalLM if self.kind == "causal" else AutoModelForSeq2SeqLM
        self.model = loader.from_pretrained(folder).to(self.device).eval()
        self.generation_config = (GenerationConfig.from_pretrained(folder)
                                  if (folder / "generation_config.json").exists() else self.model.generation_config)

    def summarize(self, dialogues: list[str]) -> list[str]:
        if self.kind == "causal":
            return generate_causal(self.model, self.tokenizer, dialogues, self.spec, self.generation_config,
                                   self.batch_size, self.device, self.bf16)
        return generate_seq2seq(self.model, self.tokenizer, dialogues, self.generation_config,
                                self.max_source_length, self.batch_size, self.device, self.bf16)


def load_summarizer(folder: str | Path, device="cpu", batch_size: int = 8, bf16: bool = False) -> Summarizer:
    return Summarizer(folder, device, batch_size, bf16)


def _device(device):
    import torch

    return device if isinstance(device, torch.device) else torch.device(device)
