"""Generation settings checked at config time: pure Python (no torch), so the Snakefile's config checks
(``vecflow.core.config_checks``) and every summarizer command run the same check.

It rejects what seed 001 shipped: beam-only flags such as ``length_penalty`` or ``early_stopping`` with
``num_beams: 1`` (transformers ignores them silently), unknown keys and wrong types. Turning checked settings
into a ``transformers.GenerationConfig`` is ``vecflow.summary.generation.to_generation_config``.

    check_generation_config(config["summarizer"]["generation"], "summarizer.generation")
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
