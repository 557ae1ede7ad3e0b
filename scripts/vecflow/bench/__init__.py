"""Benchmarks: every hot path timed side by side with the tool a user would otherwise run (``vecflow bench``).

    vecflow bench NAME [--size tiny|full] [--out-dir results/bench] [--dialogsum DIR] [--chunks FILE]

Each benchmark runs our code and its peer in ONE process on the same inputs, checks that the compared outputs
agree, prints peer figure, our figure, the ratio, the exact workload and the machine (cores, torch threads,
dtype, load average), and writes ``OUT_DIR/NAME.json``. The machine is shared and noisy, so the ratio is the
figure to read, not the absolute times. ``--size tiny`` runs each one in seconds on the tiny models the tests
make (``--minilm``/``--smollm2`` point at other folders) and on generated text; ``full`` is the workload
``make bench`` records in BENCHMARKS.md, on the data named on the command line (``--dialogsum``: a folder with
DialogSum's ``dev.jsonl`` and ``train.jsonl``; ``--chunks``: a ``chunks.jsonl`` of the wikitext config's
``chunk_articles``).

One module per benchmark:

- ``embed``: ``vecflow.lvm.embeddings.embed_chunks`` vs ``SentenceTransformer.encode`` (chunks/s; max |diff|).
- ``fivecat``: ``vecflow.lvm.fivecat.evaluate_split`` vs ``reference_fivecat``, a one-window-at-a-time evaluator
  written the way the old evaluator worked (windows/s; every number compared).
- ``bertscore``: ``vecflow.summary.scoring.bertscore`` vs ``bert_score.score`` (pairs/s, model load included in both).
- ``generate``: ``vecflow.summary.infer.generate_seq2seq`` / ``generate_causal`` (batched, left padding, KV
  cache) vs a plain one-dialogue-at-a-time ``model.generate`` loop (summaries/s; share of identical outputs).
- ``train``: ``vecflow.summary.loop.Loop.train_step`` vs HF ``Seq2SeqTrainer`` (BERT2BERT) and ``Trainer``
  (causal LM) on the same model, rows, batch and lengths, one length-grouped epoch each (samples/s).
- ``serve``: ``/predict-next`` and ``/encode`` of a real ``vecflow serve`` process with 8 concurrent loopback
  clients (``vecflow.ship.loadgen``, the server's one load client) vs the same functions called in-process
  (requests/s, p50/p95/p99).
- ``lvm``: achieved FLOP/s of ``vecflow.lvm.train_loop.train_one_epoch`` (matmul FLOPs counted: torch FlopCounterMode,
  whose forward count equals ``transformer_lvm_flops``) vs this machine's fp32 and bf16 matmul peak measured in
  the same run.
- ``startup``: the per-job start-up floor, ``vecflow CMD --help`` in a fresh process for every command.
- ``pipeline``: on a finished demo run (``--workdir``; ``--size tiny`` builds a tiny one): the no-op rerun, the
  report regenerated from cache, per-job start-up vs a bare interpreter and the report job's import profile.

Shared pieces: ``common`` (recording a result, comparing numbers, timing), ``inputs`` (the texts, dialogues
and models the benchmarks read), ``table`` (BENCHMARKS.md's table), ``profile`` (py-spy summaries) and ``cli``.
"""
