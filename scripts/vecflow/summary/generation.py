"""Generation settings: checked once at config time, then turned into a ``transformers.GenerationConfig``.

``check_generation_config`` (``vecflow.core.generation_config``, re-exported here) is pure Python (no torch),
so the Snakefile can call it while loading the config. It rejects what seed 001 shipped: beam-only flags such
as ``length_penalty`` or ``early_stopping`` with ``num_beams: 1`` (transformers ignores them silently), unknown
keys and wrong types.

    check_generation_config(config["summarizer"]["generation"], "summarizer.generation")
    model.generation_config = to_generation_config(gen, tokenizer, model.config.decoder_start_token_id)
"""

from __future__ import annotations

from vecflow.core.generation_config import check_generation_config  # noqa: F401  (re-exported)


def to_generation_config(gen: dict, tokenizer, decoder_start_token_id: int | None = None):
    """A ``GenerationConfig`` from checked settings plus the tokenizer's start / end / padding ids.

    BERT-like tokenizers have no eos token: their ``[SEP]`` ends a sequence and ``[CLS]`` starts the
    decoder, as in a BERT2BERT warm start. Pass the model's own ``decoder_start_token_id`` when it has one
    (BART starts from ``</s>``, T5 from ``<pad>``).
    """
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if decoder_start_token_id is None:
        decoder_start_token_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    return GenerationConfig(
        **gen,
        decoder_start_token_id=decoder_start_token_id,
        bos_token_id=decoder_start_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
