"""``vecflow bench generate``: ``vecflow.summary.infer.generate_seq2seq`` / ``generate_causal`` (batched, left
padding, KV cache) vs a plain one-dialogue-at-a-time ``model.generate`` loop (summaries/s; share of identical
outputs), on DialogSum dev (``--dialogsum``) or tiny generated dialogues."""

from __future__ import annotations

from pathlib import Path

from vecflow.bench.common import MODELS, cpu_ratio, record, timed
from vecflow.bench.inputs import causal_model, dialogue_rows, seq2seq_model, tiny_dialogue_rows


def one_at_a_time_seq2seq(model, tokenizer, dialogues, generation_config, max_source_length):
    import torch

    out = []
    with torch.inference_mode():
        for dialogue in dialogues:
            batch = tokenizer(dialogue, max_length=max_source_length, truncation=True, return_tensors="pt",
                              return_token_type_ids=False)
            generated = model.generate(**batch, generation_config=generation_config)
            out.append(tokenizer.decode(generated[0], skip_special_tokens=True).strip())
    return out


def one_at_a_time_causal(model, tokenizer, dialogues, spec, generation_config):
    import torch

    from vecflow.summary.infer import prompt_ids

    out = []
    with torch.inference_mode():
        for dialogue in dialogues:
            ids = torch.tensor([prompt_ids(tokenizer, dialogue, spec)])
            generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                       generation_config=generation_config)
            out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


def compare_generation(name: str, texts: list[str], peer, ours, ours_name: str, workload: dict,
                       out_dir: Path | None) -> dict:
    """``peer(texts)`` (one at a time) against ``ours(texts)`` (batched): both warmed up on the first text outside
    the timing, then timed on all of them; summaries/s and the share of identical outputs."""
    peer(texts[:1])
    ours(texts[:1])
    peer_s, theirs = timed(lambda: peer(texts))
    ours_s, mine = timed(lambda: ours(texts))
    same = sum(a == b for a, b in zip(theirs, mine)) / len(texts)
    return record(name, workload=workload, unit="summaries/s", peer="model.generate one dialogue at a time",
                  peer_value=len(texts) / peer_s, ours=ours_name, ours_value=len(texts) / ours_s, goal=3.0,
                  check={"identical_outputs": same}, extra={"seconds": {"peer": peer_s, "ours": ours_s}},
                  out_dir=out_dir, cpu=cpu_ratio(peer_s, ours_s))


def bench_generate(size: str, out_dir: Path | None, minilm: Path | None = None, smollm2: Path | None = None,
                   dialogues: int | None = None, families: tuple = ("seq2seq", "causal"),
                   dialogsum: Path | None = None, **_) -> list[dict]:
    import torch

    from vecflow.summary.generation import to_generation_config
    from vecflow.summary.infer import causal_generation_config, generate_causal, generate_seq2seq

    full = size == "full"
    rows = dialogue_rows(dialogsum, dialogues or 16) if full else tiny_dialogue_rows(dialogues or 6)
    texts = [r["dialogue"] for r in rows]
    batch_size, device, results = 8, torch.device("cpu"), []
    data = "DialogSum dev" if full else "tiny dialogues"
    if "seq2seq" in families:
        model, tokenizer, start = seq2seq_model(Path(minilm or MODELS / "minilm"), rows)
        new_tokens = 32 if full else 8
        gen = {"num_beams": 2, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "no_repeat_ngram_size": 3,
               "early_stopping": True}
        config = to_generation_config(gen, tokenizer, start)
        src = 256
        results.append(compare_generation(
            "generate_seq2seq", texts, lambda t: one_at_a_time_seq2seq(model, tokenizer, t, config, src),
            lambda t: generate_seq2seq(model, tokenizer, t, config, src, batch_size, device),
            "vecflow.summary.infer.generate_seq2seq", {
                "dialogues": len(rows), "model": "BERT2BERT warm-started from "
                + Path(minilm or MODELS / "minilm").name + " (untrained cross-attention, seed 0)", "generation": gen,
                "max_source_length": src, "batch_size": batch_size, "data": data,
                "note": "min_new_tokens = max_new_tokens: both sides write the same number of tokens"}, out_dir))
        del model
    if "causal" in families:
        model, tokenizer = causal_model(Path(smollm2 or MODELS / "smollm2"))
        new_tokens = 40 if full else 8
        gen = {"num_beams": 1, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
        config = causal_generation_config(gen, tokenizer)
        spec = {"kind": "causal", "max_source_length": 384 if full else 64, "max_target_length": 48,
                "system_message": None, "user_template": None}
        results.append(compare_generation(
            "generate_causal", texts, lambda t: one_at_a_time_causal(model, tokenizer, t, spec, config),
            lambda t: generate_causal(model, tokenizer, t, spec, config, batch_size, device),
            "vecflow.summary.infer.generate_causal", {
                "dialogues": len(rows), "model": Path(smollm2 or MODELS / "smollm2").name + " (base weights)",
                "generation": gen, "max_source_length": spec["max_source_length"], "batch_size": batch_size,
                "data": data,
                "note": "greedy, min_new_tokens = max_new_tokens; prompts through the chat template on both sides"},
            out_dir))
    return results
