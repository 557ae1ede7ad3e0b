"""Tiny random models with small offline tokenizers, for fast tests (no hub, no downloads).

``make_tiny_encoder(dir)`` writes a 2-layer BERT (uncased WordPiece) in HF layout: it stands in for MiniLM as
encoder, BERTScore backbone and BERT2BERT warm start. ``make_tiny_causal_lm(dir)`` writes a 2-layer Llama with a
byte-level BPE tokenizer and a chat template: it stands in for SmolLM2.
"""

from __future__ import annotations

import json
from pathlib import Path

WORDS = (
    "the a an and or but to of in on at for with is are was were be been it this that he she they we you i "
    "person # : . , ? ! ' - summary topic dialogue talk talks tells asks says wants needs help buy sell book "
    "doctor hotel room food dinner lunch job work school friend money time day today tomorrow yes no not "
    "good bad new old about from by his her their my your what why how when where who can will would "
    "one two three four five six seven eight nine 0 1 2 3 4 5 6 7 8 9 text chunk article python module "
    "function class data model train test value list string number file open read write print return"
).split()


def make_tiny_encoder(out_dir: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + list("abcdefghijklmnopqrstuvwxyz")
    seen, ordered = set(), []
    for token in vocab:
        if token not in seen:
            seen.add(token)
            ordered.append(token)
    (out / "vocab.txt").write_text("\n".join(ordered) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(out / "vocab.txt"), do_lower_case=True, model_max_length=128)
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(ordered),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    return out


def make_tiny_causal_lm(out_dir: str | Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=256,
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tokenizer.save_pretrained(out)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def write_manifest(model_dir: str | Path, name: str) -> Path:
    """A minimal manifest.json as fetch_model writes it (source: local)."""
    from vecflow.core.io import sha256_tree

    model_dir = Path(model_dir)
    manifest = {
        "name": name,
        "source": {"type": "local", "path": str(model_dir)},
        "files": sha256_tree(model_dir, exclude=["manifest.json"]),
    }
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return model_dir / "manifest.json"
