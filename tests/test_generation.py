"""Generation settings: config-time errors name the key; valid settings become a GenerationConfig."""

import subprocess
import sys

import pytest

from vecflow.core.errors import VecflowError
from vecflow.summary.generation import check_generation_config, to_generation_config

WHERE = "summarizer.generation"


def test_demo_settings_are_valid():
    check_generation_config({"num_beams": 2, "max_new_tokens": 32, "no_repeat_ngram_size": 3,
                             "length_penalty": 1.0, "early_stopping": True}, WHERE)
    check_generation_config({"num_beams": 1, "max_new_tokens": 24}, "elm.generation")
    # defaults are harmless with greedy search
    check_generation_config({"num_beams": 1, "max_new_tokens": 8, "length_penalty": 1.0,
                             "early_stopping": False}, WHERE)


@pytest.mark.parametrize(
    "gen, message",
    [
        ({"num_beams": 1, "max_new_tokens": 8, "length_penalty": 1.2},
         "summarizer.generation.length_penalty: only valid with num_beams > 1 (num_beams is 1)"),
        ({"num_beams": 1, "max_new_tokens": 8, "early_stopping": True},
         "summarizer.generation.early_stopping: only valid with num_beams > 1 (num_beams is 1)"),
        ({"max_new_tokens": 8, "diversity_penalty": 0.5},
         "summarizer.generation.diversity_penalty: only valid with num_beams > 1 (num_beams is 1)"),
        ({"num_beams": 1, "max_new_tokens": 8, "num_beam_groups": 2},
         "summarizer.generation.num_beam_groups: only valid with num_beams > 1 (num_beams is 1)"),
        ({"num_beams": 4, "max_new_tokens": 8, "num_beam_groups": 2},
         "summarizer.generation.num_beam_groups: group beam search is not part of transformers 5"),
        ({"num_beams": 2, "max_new_tokens": 0}, "summarizer.generation.max_new_tokens: must be >= 1 (got 0)"),
        ({"num_beams": 0, "max_new_tokens": 4}, "summarizer.generation.num_beams: must be >= 1 (got 0)"),
        ({"num_beams": 2}, "summarizer.generation.max_new_tokens: missing"),
        ({"num_beams": 2, "max_new_tokens": 4, "max_length": 30},
         "summarizer.generation.max_length: unknown generation setting"),
        ({"num_beams": "4", "max_new_tokens": 4}, "summarizer.generation.num_beams: expected int, got str"),
        ({"num_beams": True, "max_new_tokens": 4}, "summarizer.generation.num_beams: expected int, got bool"),
        ({"num_beams": 2, "max_new_tokens": 4.5}, "summarizer.generation.max_new_tokens: expected int, got float"),
        ({"num_beams": 2, "max_new_tokens": 4, "early_stopping": "yes"},
         "summarizer.generation.early_stopping: expected bool, got str"),
        ({"max_new_tokens": 4, "temperature": 0.7},
         "summarizer.generation.temperature: only valid with do_sample: true (do_sample is false)"),
    ],
)
def test_bad_settings_name_the_key(gen, message):
    with pytest.raises(VecflowError) as err:
        check_generation_config(gen, WHERE)
    assert str(err.value).startswith(message)


def test_not_a_mapping():
    with pytest.raises(VecflowError, match="summarizer.generation: expected a mapping"):
        check_generation_config([1, 2], WHERE)


def test_sampling_flags_allowed_with_do_sample():
    check_generation_config({"max_new_tokens": 4, "do_sample": True, "temperature": 0.7, "top_p": 0.9}, WHERE)


def test_importable_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "from vecflow.summary.generation import check_generation_config\n"
            "check_generation_config({'num_beams': 2, 'max_new_tokens': 4}, 'x')\nprint('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "ok"


class BertLikeTokenizer:
    eos_token_id, sep_token_id, cls_token_id, bos_token_id, pad_token_id = None, 3, 2, None, 0


class BartLikeTokenizer:
    eos_token_id, sep_token_id, cls_token_id, bos_token_id, pad_token_id = 2, 2, 0, 0, 1


def test_to_generation_config_bert_ids():
    config = to_generation_config({"num_beams": 2, "max_new_tokens": 5, "early_stopping": True},
                                  BertLikeTokenizer())
    assert (config.num_beams, config.max_new_tokens, config.early_stopping) == (2, 5, True)
    assert config.decoder_start_token_id == 2  # [CLS]
    assert config.eos_token_id == 3  # [SEP]
    assert config.pad_token_id == 0


def test_to_generation_config_uses_the_models_start_token():
    config = to_generation_config({"max_new_tokens": 5}, BartLikeTokenizer(), decoder_start_token_id=2)
    assert config.decoder_start_token_id == 2 and config.eos_token_id == 2 and config.pad_token_id == 1
