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


# ------------------------------------------------------------------ causal batched generation (infer.py)
DIALOGUES = [
    "#Person1#: can you help me book a hotel room for tonight ?\n#Person2#: yes , for how many people ?\n"
    "#Person1#: two , and we need breakfast .",
    "#Person1#: hi .",
    "#Person1#: what about dinner tomorrow ?\n#Person2#: good , my friend will buy food .",
    "#Person1#: the doctor asks about work .\n#Person2#: no .",
    "#Person1#: yes",
]


@pytest.fixture(scope="module")
def causal_lm(tiny_causal_lm):
    from vecflow.summary.causal import load_base

    import torch

    model, tok = load_base(tiny_causal_lm)
    torch.manual_seed(0)
    with torch.no_grad():  # the random init writes '\n' whatever the prompt; these weights follow the prompt
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.5)
    return model.eval(), tok


def one_at_a_time(model, tok, dialogues, spec, config):
    """The peer of the bench: a plain ``model.generate`` per prompt, nothing shared, no padding."""
    import torch

    from vecflow.summary.infer import prompt_ids

    out = []
    with torch.inference_mode():
        for dialogue in dialogues:
            ids = torch.tensor([prompt_ids(tok, dialogue, spec)])
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            out.append(tok.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def causal_spec():
    return {"kind": "causal", "max_source_length": 64, "max_target_length": 24, "system_message": None,
            "user_template": None}


@pytest.mark.parametrize("gen", [{"num_beams": 1, "max_new_tokens": 10, "min_new_tokens": 10},
                                 {"num_beams": 1, "max_new_tokens": 10},
                                 {"num_beams": 2, "max_new_tokens": 6, "min_new_tokens": 6}])
@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_batched_causal_generation_writes_what_one_at_a_time_writes(causal_lm, gen, batch_size):
    """Shared prefix computed once, rows prefilled on their own, pads in the middle of the cache: the same
    tokens as a plain generate per dialogue (a wrong position, mask or cache slot changes a random LM's text)."""
    import torch

    from vecflow.summary.infer import causal_generation_config, generate_causal

    model, tok = causal_lm
    config = causal_generation_config(gen, tok)
    ours = generate_causal(model, tok, DIALOGUES, causal_spec(), config, batch_size, torch.device("cpu"))
    assert ours == one_at_a_time(model, tok, DIALOGUES, causal_spec(), config)
    assert len(set(ours)) > 1  # the prompts matter: a model writing one fixed text would prove nothing


def test_greedy_generation_prefills_every_prompt_token_but_the_last(causal_lm, monkeypatch):
    """The fast path is taken: generate gets a cache holding all but the last prompt token of the widest row,
    and the prefix the prompts share was computed once (its slots hold the same keys in every row)."""
    import torch

    from vecflow.summary.infer import causal_generation_config, generate_causal, prompt_ids, shared_prefix

    model, tok = causal_lm
    seen = []
    original = type(model).generate

    def spy(self, *args, **kwargs):
        seen.append((kwargs["input_ids"].shape, kwargs.get("cache")))
        keys = kwargs["cache"].layers[0].keys if kwargs.get("cache") is not None else None
        seen[-1] += (None if keys is None else keys.clone(),)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "generate", spy)
    config = causal_generation_config({"num_beams": 1, "max_new_tokens": 3}, tok)
    generate_causal(model, tok, DIALOGUES, causal_spec(), config, 8, torch.device("cpu"))
    [(shape, cache, keys)] = seen
    prompts = [prompt_ids(tok, d, causal_spec()) for d in DIALOGUES]
    assert shape == (len(DIALOGUES), max(map(len, prompts)))
    assert cache is not None and keys.shape[-2] == shape[1] - 1
    prefix = len(shared_prefix(prompts))
    assert prefix > 10  # the system message and the template header
    assert torch.equal(keys[:, :, :prefix], keys[:1, :, :prefix].expand_as(keys[:, :, :prefix]))


def test_shared_prefix_stops_one_token_short_of_the_shortest_prompt():
    from vecflow.summary.infer import shared_prefix

    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5]]) == [1, 2]
    assert shared_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]  # every row keeps a token for generate
    assert shared_prefix([[7, 8]]) == [7]
    assert shared_prefix([[1, 2], [3, 4]]) == [] == shared_prefix([])


def test_beam_search_prefills_each_prompt_once_and_repeats_its_cache_rows_per_beam(causal_lm, monkeypatch):
    """Beam search takes the row-prefill path too: generate gets the cache with each dialogue's rows repeated
    num_beams times (adjacent, the layout generate's own expansion uses), so no beam's prompt is prefilled again."""
    import torch

    from vecflow.summary.infer import causal_generation_config, generate_causal

    model, tok = causal_lm
    seen = []
    original = type(model).generate

    def spy(self, *args, **kwargs):
        cache = kwargs.get("cache")
        seen.append((kwargs["input_ids"].shape, None if cache is None else cache.layers[0].keys.clone()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model), "generate", spy)
    config = causal_generation_config({"num_beams": 3, "max_new_tokens": 3}, tok)
    generate_causal(model, tok, DIALOGUES[:2], causal_spec(), config, 8, torch.device("cpu"))
    [(shape, keys)] = seen
    assert keys is not None and keys.shape[0] == 2 * 3 and keys.shape[-2] == shape[1] - 1
    assert torch.equal(keys[0], keys[2]) and torch.equal(keys[3], keys[5]) and not torch.equal(keys[0], keys[3])
