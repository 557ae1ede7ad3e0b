"""Speaker tags (``#Person1#`` … ``#PersonN#``) as ordinary, distinct tokens of a seq2seq model.

Two failures from the users' runs are made impossible here (docs/design.md §5):

* tags added as *special* tokens vanish under ``decode(skip_special_tokens=True)``: we add them as normal
  tokens (``special=False``), so predictions keep them;
* with an uncased tokenizer and default mean-resizing every tag starts with the same embedding and the
  model confuses speakers ("#person1# tells #person1#"): we match tags before lower-casing
  (``normalized=False``) and start each new row from the mean of its own sub-word pieces in the ORIGINAL
  tokenizer ("#", "person", "##1", "#"), so Person1 and Person2 start apart.

    tags = speaker_tags(count_speakers(texts))
    add_speaker_tokens(tokenizer, model, tags)
"""

from __future__ import annotations

import re
from typing import Iterable

SPEAKER_PATTERN = re.compile(r"#Person(\d+)#")
MIN_SPEAKERS = 3


def speaker_tags(count: int) -> list[str]:
    """``["#Person1#", …, "#Person{count}#"]``."""
    return [f"#Person{i}#" for i in range(1, count + 1)]


def count_speakers(texts: Iterable[str], minimum: int = MIN_SPEAKERS) -> int:
    """The highest N of any ``#PersonN#`` in ``texts``, and at least ``minimum``."""
    highest = minimum
    for text in texts:
        for match in SPEAKER_PATTERN.finditer(text):
            highest = max(highest, int(match.group(1)))
    return highest


def add_speaker_tokens(tokenizer, model, tags: list[str]) -> list[str]:
    """Add ``tags`` to ``tokenizer`` as normal tokens and give ``model`` an embedding row for each.

    Each new row (input embeddings, and untied output embeddings and their bias) is the mean of the rows
    of the tag's pieces under the tokenizer as it was before. For an ``EncoderDecoderModel`` both the
    encoder's and the decoder's embeddings are grown. Tags the tokenizer already has are left alone.
    Returns the tags that were added.
    """
    from tokenizers import AddedToken

    vocab = tokenizer.get_vocab()
    new_tags = [tag for tag in tags if tag not in vocab]
    if not new_tags:
        return []
    pieces = {tag: tokenizer(tag, add_special_tokens=False)["input_ids"] for tag in new_tags}
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False, single_word=False) for tag in new_tags])
    new_ids = {tag: tokenizer.convert_tokens_to_ids(tag) for tag in new_tags}
    for part in embedding_owners(model):
        part.resize_token_embeddings(len(tokenizer), mean_resizing=False)  # rows are set just below
        init_rows_from_pieces(part, new_ids, pieces)
    sync_vocab_size(model, len(tokenizer))
    return new_tags


def embedding_owners(model) -> list:
    """The sub-models that own token embeddings: encoder and decoder of an EncoderDecoderModel, else the model."""
    if model.__class__.__name__ == "EncoderDecoderModel":
        return [model.encoder, model.decoder]
    return [model]


def init_rows_from_pieces(model, new_ids: dict[str, int], pieces: dict[str, list[int]]) -> None:
    """Set each new token's row to the mean of its pieces' rows in the input and (untied) output layers."""
    import torch

    inputs = model.get_input_embeddings()
    outputs = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    untied_output = outputs is not None and outputs.weight.data_ptr() != inputs.weight.data_ptr()
    with torch.no_grad():
        for tag, new_id in new_ids.items():
            piece_ids = torch.tensor(pieces[tag], dtype=torch.long)
            inputs.weight[new_id] = inputs.weight[piece_ids].mean(0)
            if untied_output:
                outputs.weight[new_id] = outputs.weight[piece_ids].mean(0)
            bias = getattr(outputs, "bias", None) if outputs is not None else None
            if bias is not None and bias.shape[0] > new_id:
                bias[new_id] = bias[piece_ids].mean(0)


def sync_vocab_size(model, size: int) -> None:
    """Keep ``config.vocab_size`` (and an EncoderDecoder's decoder config) equal to the grown vocabulary."""
    model.config.vocab_size = size
    for side in ("encoder", "decoder"):
        sub = getattr(model.config, side, None)
        if sub is not None and hasattr(sub, "vocab_size"):
            sub.vocab_size = size
