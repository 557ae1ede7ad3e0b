"""Speaker tags are single, case-preserving, normal tokens with distinct piece-mean initial embeddings."""

import pytest
import torch

from vecflow.data.speakers import add_speaker_tokens, count_speakers, embedding_owners, speaker_tags


@pytest.fixture(scope="module")
def encoder_dir(tiny_encoder):
    return tiny_encoder


@pytest.fixture()
def bert2bert(encoder_dir):
    from transformers import AutoTokenizer, EncoderDecoderModel

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(str(encoder_dir), str(encoder_dir))
    return model, tokenizer


def test_count_speakers_takes_the_highest_tag_and_a_minimum():
    assert count_speakers(["#Person1#: hi", "#Person2#: hello #Person5#"]) == 5
    assert count_speakers(["no tags at all"]) == 3
    assert count_speakers(["#Person1#: hi"], minimum=1) == 1
    assert speaker_tags(3) == ["#Person1#", "#Person2#", "#Person3#"]


def test_tags_are_single_tokens_and_survive_decode_with_case(bert2bert):
    model, tokenizer = bert2bert
    added = add_speaker_tokens(tokenizer, model, speaker_tags(3))
    assert added == ["#Person1#", "#Person2#", "#Person3#"]
    ids = tokenizer("#Person1# asks #Person2# about the HOTEL.")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[1:4] == ["#Person1#", "asks", "#Person2#"]
    assert "hotel" in tokens  # the rest is still lower-cased by the uncased tokenizer
    assert tokenizer.decode(ids, skip_special_tokens=True) == "#Person1# asks #Person2# about the hotel."
    assert tokenizer.decode(tokenizer("#Person1# asks #Person2#")["input_ids"], skip_special_tokens=True) == (
        "#Person1# asks #Person2#"
    )


def test_tags_survive_save_and_reload(bert2bert, tmp_path):
    from transformers import AutoTokenizer

    model, tokenizer = bert2bert
    add_speaker_tokens(tokenizer, model, speaker_tags(2))
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    ids = reloaded("#Person2# tells #Person1#")["input_ids"]
    assert reloaded.convert_ids_to_tokens(ids)[1] == "#Person2#"
    assert reloaded.decode(ids, skip_special_tokens=True) == "#Person2# tells #Person1#"


def test_new_rows_are_the_mean_of_their_pieces_and_distinct(bert2bert):
    model, tokenizer = bert2bert
    pieces = {tag: tokenizer(tag, add_special_tokens=False)["input_ids"] for tag in speaker_tags(2)}
    assert tokenizer.convert_ids_to_tokens(pieces["#Person1#"]) == ["#", "person", "##1", "#"]
    add_speaker_tokens(tokenizer, model, speaker_tags(2))
    for part in embedding_owners(model):  # encoder and decoder
        weight = part.get_input_embeddings().weight
        assert weight.shape[0] == len(tokenizer)
        rows = {tag: weight[tokenizer.convert_tokens_to_ids(tag)] for tag in pieces}
        for tag, piece_ids in pieces.items():
            assert torch.allclose(rows[tag], weight[piece_ids].mean(0))
        assert not torch.allclose(rows["#Person1#"], rows["#Person2#"])
    decoder = model.decoder
    out = decoder.get_output_embeddings()
    assert out.weight.shape[0] == len(tokenizer) and out.bias.shape[0] == len(tokenizer)
    p1 = tokenizer.convert_tokens_to_ids("#Person1#")
    assert torch.allclose(out.bias[p1], out.bias[pieces["#Person1#"]].mean(0))
    assert model.config.decoder.vocab_size == len(tokenizer)


def test_adding_twice_adds_nothing(bert2bert):
    model, tokenizer = bert2bert
    add_speaker_tokens(tokenizer, model, speaker_tags(3))
    size = len(tokenizer)
    assert add_speaker_tokens(tokenizer, model, speaker_tags(3)) == []
    assert add_speaker_tokens(tokenizer, model, speaker_tags(4)) == ["#Person4#"]
    assert len(tokenizer) == size + 1
    assert model.encoder.get_input_embeddings().weight.shape[0] == size + 1


def test_plain_seq2seq_model_with_untied_head(encoder_dir):
    """A non-EncoderDecoder model (BART, untied lm_head) gets its input and output rows initialised too."""
    from transformers import AutoTokenizer, BartConfig, BartForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(encoder_dir)
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = BartForConditionalGeneration(config)
    pieces = tokenizer("#Person3#", add_special_tokens=False)["input_ids"]
    add_speaker_tokens(tokenizer, model, speaker_tags(3))
    new_id = tokenizer.convert_tokens_to_ids("#Person3#")
    head = model.get_output_embeddings().weight
    assert head.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert torch.allclose(head[new_id], head[pieces].mean(0))
    assert torch.allclose(model.get_input_embeddings().weight[new_id],
                          model.get_input_embeddings().weight[pieces].mean(0))
