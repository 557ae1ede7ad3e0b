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
DEFAULT_LENGTH_TEMPLATE = "Write about {words} words."


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
                  summary: str | None = None, length_line: str | None = None) -> list[dict]:
    """System + user (+ assistant) messages for a causal summarizer; the system message is always explicit.

    ``length_line`` (a length instruction, see ``length_instruction``) ends the user turn, after the dialogue,
    so the prompt prefix that every dialogue shares stays the same.
    """
    user = (user_template or DEFAULT_USER_TEMPLATE).format(dialogue=dialogue)
    messages = [
        {"role": "system", "content": system_message or DEFAULT_SYSTEM_MESSAGE},
        {"role": "user", "content": user + (f"\n\n{length_line}" if length_line else "")},
    ]
    if summary is not None:
        messages.append({"role": "assistant", "content": summary})
    return messages


def truncate_tokens(tokenizer, text: str, max_tokens: int) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (byte-level BPE decodes back to the same characters)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


# ------------------------------------------------------------------------------------ length control
def fit_length_model(dialogues: list[str], summaries: list[str], round_to: int = 5,
                     template: str = DEFAULT_LENGTH_TEMPLATE) -> dict:
    """Summary words as a least-squares line of dialogue words, fitted on the training rows.

    On DialogSum train the two correlate at 0.88 (summary ≈ 5.6 + 0.13 × dialogue words), so the line gives
    each dialogue a length budget that follows the training summaries. Stored in the model folder's spec
    (``length``), so prediction and the server ask for the same budget as the selection evaluations did.
    """
    if not dialogues or len(dialogues) != len(summaries):
        raise VecflowError("length model: needs one summary per training dialogue (got none)")
    x = [float(len(d.split())) for d in dialogues]
    y = [float(len(s.split())) for s in summaries]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sxx if sxx > 0 else 0.0
    ys = sorted(y)
    return {"mode": "instruction", "template": template, "round_to": int(round_to),
            "intercept": my - slope * mx, "slope": slope,
            "min_words": ys[round(0.02 * (len(ys) - 1))], "max_words": ys[round(0.98 * (len(ys) - 1))],
            "train_mean_words": my}


def length_budget(length: dict, dialogue: str) -> int:
    """The words a summary of ``dialogue`` should have: the fitted line, clipped to the training range (2nd to
    98th percentile) and rounded to ``round_to``."""
    words = length["intercept"] + length["slope"] * len(dialogue.split())
    words = min(max(words, length["min_words"]), length["max_words"])
    return round_words(words, int(length["round_to"]))


def round_words(words: float, round_to: int) -> int:
    step = max(int(round_to), 1)
    return max(int(round(words / step)) * step, step)


def length_instruction(spec: dict, dialogue: str, words: int | None = None) -> str | None:
    """The length line of a prompt: ``words`` (training: the reference's own length) or the fitted budget;
    None when the spec has no length control."""
    length = spec.get("length") or {}
    if length.get("mode") != "instruction":
        return None
    target = round_words(words, int(length["round_to"])) if words is not None else length_budget(length, dialogue)
    return str(length.get("template") or DEFAULT_LENGTH_TEMPLATE).format(words=target)


def prompt_ids(tokenizer, dialogue: str, spec: dict, words: int | None = None) -> list[int]:
    """Token ids of the chat prompt (system, user with the truncated dialogue, assistant header).

    ``words``: the length to ask for when the spec has a length instruction (training passes the reference's
    word count; prediction leaves it None and gets the fitted budget of the whole dialogue).
    """
    length_line = length_instruction(spec, dialogue, words)
    dialogue = truncate_tokens(tokenizer, dialogue, int(spec["max_source_length"]))
    text = tokenizer.apply_chat_template(
        chat_messages(dialogue, spec.get("system_message"), spec.get("user_template"), length_line=length_line),
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
            extra = {"cache": beam_cache(model)} if getattr(generation_config, "num_beams", 1) > 1 else {}
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                generated = model.generate(**batch, generation_config=generation_config, **extra)
            for i, text in zip(idx, tokenizer.batch_decode(generated, skip_special_tokens=True)):
                out[i] = text.strip()
    return out


def beam_cache(model):
    """An empty encoder-decoder cache whose beam-search reorder leaves the cross-attention keys and values alone.

    Beam search only moves rows within a dialogue's own beams, and a dialogue's beams share one encoder output,
    so reordering the cross-attention cache (a copy of batch × beams × source length per layer at every step,
    15 % of a batched BERT2BERT beam search, py-spy) never changes a value. Same outputs (test)."""
    from transformers import DynamicCache, EncoderDecoderCache

    class BeamCache(EncoderDecoderCache):
        def reorder_cache(self, beam_idx):
            self.self_attention_cache.reorder_cache(beam_idx)

    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    return BeamCache(DynamicCache(config=config), DynamicCache(config=config))


def generate_causal(model, tokenizer, dialogues: list[str], spec: dict, generation_config, batch_size: int,
                    device, bf16: bool = False) -> list[str]:
    """Batched generation with the KV cache, longest prompts first; only the new tokens are decoded.

    Greedy and sampling (``num_beams: 1``) on a model whose cache is a plain ``DynamicCache`` take the fast
    path: the prompt prefix that every dialogue shares (system message, template header) is computed once,
    each prompt is then prefilled on its own on top of it (no padding: a padded batch computes every pad
    token), and the rows' caches are laid out as ``[shared prefix | pads | own tokens]`` so that a batch of
    ``batch_size`` rows decodes together, the pads masked out and the positions counted from the mask.
    Anything else (beam search, sliding-window caches) runs ``model.generate`` on left-padded batches.
    """
    import torch

    model.eval()
    prompts = [prompt_ids(tokenizer, d, spec) for d in dialogues]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_turn_id(tokenizer)
    rows_first = bool(prompts) and min(map(len, prompts)) > 1 and _prefills_rows(model, generation_config)
    out = [""] * len(dialogues)
    with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        prefix = shared_prefix(prompts) if rows_first and len(prompts) > 1 else []
        prefix_cache = _forward_cache(model, prefix, None, device) if prefix else None
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = [prompts[i] for i in idx]
            if rows_first:
                ids, mask, cache = _row_prefilled_batch(model, batch, len(prefix), prefix_cache, pad_id, device)
                extra = {"cache": _repeat_rows(model, cache, int(getattr(generation_config, "num_beams", None) or 1))}
            else:
                ids, mask = _left_padded(batch, pad_id, device)
                extra = {}
            generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=generation_config,
                                       **extra)
            texts = tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
            for i, text in zip(idx, texts):
                out[i] = text.strip()
    return out


def shared_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix common to all prompts, one token short of the shortest prompt."""
    if not prompts:
        return []
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return first[:n]


def _prefills_rows(model, generation_config) -> bool:
    """Whether the row-prefill path applies: the cache on, and plain (non-sliding) cache layers. Beam search
    takes it too: each prompt is prefilled once and its cache rows repeated per beam (``generate`` would prefill
    every beam's copy of the prompt: ``num_beams`` times the work)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if (getattr(generation_config, "num_beam_groups", None) or 1) != 1 or getattr(generation_config, "use_cache", True) is False:
        return False
    if getattr(generation_config, "cache_implementation", None) is not None or model.config.is_encoder_decoder:
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001 - an exotic config: the plain padded path is always correct
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _forward_cache(model, ids: list[int], cache, device, start: int = 0):
    """Run ``ids`` (one row, positions ``start...``) through the model on top of ``cache``; the filled cache."""
    import torch
    from transformers import DynamicCache

    cache = cache if cache is not None else DynamicCache(config=model.config)
    if not ids:
        return cache
    input_ids = torch.tensor([ids], device=device)
    positions = torch.arange(start, start + len(ids), device=device)[None]
    kwargs = {"logits_to_keep": 1} if _supports_logits_to_keep(model) else {}
    return model(input_ids=input_ids, position_ids=positions, cache=cache, use_cache=True, **kwargs).cache


def _supports_logits_to_keep(model) -> bool:
    """Whether the (PEFT-wrapped) model's forward takes ``logits_to_keep`` (else it computes every logit)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def _copy_cache(model, cache):
    """A cache holding the same tensors (``DynamicLayer.update`` concatenates into new tensors: no aliasing)."""
    from transformers import DynamicCache

    return DynamicCache([(layer.keys, layer.values) for layer in cache.layers], config=model.config)


def _row_prefilled_batch(model, prompts: list[list[int]], prefix_len: int, prefix_cache, pad_id: int, device):
    """Ids, mask and cache of a batch whose every prompt token but the last is already in the cache.

    Row layout (width ``W`` = longest prompt): ``[shared prefix | pads | the row's own tokens]``; the cache
    holds the first ``W - 1`` slots, so ``generate`` computes only the last prompt token of every row."""
    import torch
    from transformers import DynamicCache

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.ones((len(prompts), width), dtype=torch.long)
    keys = values = None
    for row, prompt in enumerate(prompts):
        pads = width - len(prompt)
        ids[row, :prefix_len] = torch.tensor(prompt[:prefix_len])
        ids[row, prefix_len + pads :] = torch.tensor(prompt[prefix_len:])
        mask[row, prefix_len : prefix_len + pads] = 0
        base = _copy_cache(model, prefix_cache) if prefix_cache is not None else None
        cache = _forward_cache(model, prompt[prefix_len:-1], base, device, start=prefix_len)
        if keys is None:
            keys = [layer.keys.new_zeros(len(prompts), *layer.keys.shape[1:2], width - 1, layer.keys.shape[-1])
                    for layer in cache.layers]
            values = [layer.values.new_zeros(len(prompts), *layer.values.shape[1:2], width - 1,
                                             layer.values.shape[-1]) for layer in cache.layers]
        for layer, k, v in zip(cache.layers, keys, values):
            k[row, :, :prefix_len], v[row, :, :prefix_len] = layer.keys[0, :, :prefix_len], layer.values[0, :, :prefix_len]
            k[row, :, prefix_len + pads :] = layer.keys[0, :, prefix_len:]
            v[row, :, prefix_len + pads :] = layer.values[0, :, prefix_len:]
    return ids.to(device), mask.to(device), DynamicCache(list(zip(keys, values)), config=model.config)


def _repeat_rows(model, cache, times: int):
    """The cache with every row repeated ``times`` times in place (row i -> rows i*times ... i*times+times-1), the
    layout ``generate`` gives a batch it expands for beam search."""
    from transformers import DynamicCache

    if times <= 1:
        return cache
    return DynamicCache([(layer.keys.repeat_interleave(times, dim=0), layer.values.repeat_interleave(times, dim=0))
                         for layer in cache.layers], config=model.config)


def _left_padded(prompts: list[list[int]], pad_id: int, device):
    """Left padding: every prompt ends where generation starts."""
    import torch

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    return ids.to(device), mask.to(device)


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
