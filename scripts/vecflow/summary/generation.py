"""Generation settings: checked once at config time, then turned into a ``transformers.GenerationConfig``.

``check_generation_config`` is pure Python (no torch), so the Snakefile can call it while loading the
config. It rejects what seed 001 shipped: beam-only flags such as ``length_penalty`` or ``early_stopping``
with ``num_beams: 1`` (transformers ignores them silently), unknown keys and wrong types.

    check_generation_config(config["summarizer"]["generation"], "summarizer.generation")
    model.generation_config = to_generation_config(gen, tokenizer, model.config.decoder_start_token_id)
"""

from __future__ import annotations

from vecflow.core.errors import VecflowError

# key -> (accepted types, default as transformers has it)
KNOWN_KEYS: dict[str, tuple[tuple[type, ...], object]] = {
    "max_new_tokens": ((int,), None),
    "min_new_tokens": ((int,), 0),
    "num_beams": ((int,), 1),
    "no_repeat_ngram_size": ((int,), 0),
    "repetition_penalty": ((int, float), 1.0),
    "length_penalty": ((int, float), 1.0),
    "early_stopping": ((bool,), False),
    "num_beam_groups": ((int,), 1),
    "diversity_penalty": ((int, float), 0.0),
    "do_sample": ((bool,), False),
    "temperature": ((int, float), 1.0),
    "top_k": ((int,), 50),
    "top_p": ((int, float), 1.0),
}
BEAM_ONLY = ("length_penalty", "early_stopping", "num_beam_groups", "diversity_penalty")
SAMPLING_ONLY = ("temperature", "top_k", "top_p")
POSITIVE_INTS = ("max_new_tokens", "num_beams", "num_beam_groups", "top_k")
NON_NEGATIVE_INTS = ("min_new_tokens", "no_repeat_ngram_size")


def check_generation_config(gen: dict, where: str) -> None:
    """Raise a VecflowError naming ``where.key`` for anything transformers would ignore or reject."""
    if not isinstance(gen, dict):
        raise VecflowError(f"{where}: expected a mapping of generation settings, got {type(gen).__name__}")
    for key, value in gen.items():
        _check_key_and_type(key, value, where)
    for key in POSITIVE_INTS:
        if key in gen and gen[key] < 1:
            raise VecflowError(f"{where}.{key}: must be >= 1 (got {gen[key]})")
    for key in NON_NEGATIVE_INTS:
        if key in gen and gen[key] < 0:
            raise VecflowError(f"{where}.{key}: must be >= 0 (got {gen[key]})")
    if "max_new_tokens" not in gen:
        raise VecflowError(f"{where}.max_new_tokens: missing (how long may a generated text be?)")
    _check_beam_only_flags(gen, where)
    _check_sampling_flags(gen, where)


def _check_key_and_type(key: str, value, where: str) -> None:
    if key not in KNOWN_KEYS:
        raise VecflowError(f"{where}.{key}: unknown generation setting (known: {', '.join(sorted(KNOWN_KEYS))})")
    kinds, _ = KNOWN_KEYS[key]
    wrong_bool = isinstance(value, bool) and bool not in kinds  # bool is an int subclass: 'num_beams: true'
    if wrong_bool or not isinstance(value, kinds):
        expected = " or ".join(kind.__name__ for kind in kinds)
        raise VecflowError(f"{where}.{key}: expected {expected}, got {type(value).__name__} ({value!r})")


def _check_beam_only_flags(gen: dict, where: str) -> None:
    num_beams = gen.get("num_beams", 1)
    for key in BEAM_ONLY:
        default = KNOWN_KEYS[key][1]
        if key in gen and gen[key] != default and num_beams == 1:
            raise VecflowError(f"{where}.{key}: only valid with num_beams > 1 (num_beams is 1)")
    if gen.get("num_beam_groups", 1) > 1:
        raise VecflowError(
            f"{where}.num_beam_groups: group beam search is not part of transformers 5 (it is a Hub add-on "
            "and runs are offline); use num_beam_groups: 1"
        )


def _check_sampling_flags(gen: dict, where: str) -> None:
    if gen.get("do_sample", False):
        return
    for key in SAMPLING_ONLY:
        default = KNOWN_KEYS[key][1]
        if key in gen and gen[key] != default:
            raise VecflowError(f"{where}.{key}: only valid with do_sample: true (do_sample is false)")


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
