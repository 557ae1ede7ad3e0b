"""Articles -> sentence-packed chunks (``vecflow chunk-articles``).

Three inputs give the same kind of article list ``[(article_id, title, paragraphs)]``:

- ``wikitext``: WikiText raw format. `` = Title = `` starts an article; `` = = Section = = `` (and deeper) are
  sub-headings that stay inside the article but are not chunk text. WikiText's tokenisation (`` @-@ ``,
  `` , ``, ``( x )`` ...) is undone so chunks read like normal prose.
- ``jsonl``: one article per line, ``{"article_id": int, "title": str, "text": str}``.
- ``pydoc``: Python's own ``pydoc_data.topics.topics`` (one article per topic, sorted by key), so the demo has
  articles without any download.
- ``dialogues``: dialogue JSONL (DialogSum ``{fname, dialogue, ...}`` or vecflow ``{id, dialogue, ...}``, read by
  ``vecflow.data.dialogues``): one dialogue = one article (title = its id, article_id = its 0-based line position),
  one turn = one chunk, the ``#PersonN#:`` speaker tag kept in the text (no sentence packing). A second file
  (``ood_input``, e.g. DialogSum dev) gets article ids from ``OOD_ID_OFFSET`` on, so a split can pin it to OOD.

Chunking packs consecutive sentences (``split_sentences``, no NLTK) into chunks of about ``target_tokens``
whitespace tokens; a tail shorter than ``min_tokens`` is merged into the previous chunk (or dropped if it is
alone).
Output rows ``{article_id, title, chunk_index, text}`` are ordered by (article, chunk).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from vecflow.core.errors import VecflowError, where
from vecflow.core.io import iter_jsonl, open_utf8, require_fields, require_file, write_jsonl
from vecflow.data.settings import ChunkSettings

FORMATS = ("wikitext", "jsonl", "pydoc", "dialogues")
OOD_ID_OFFSET = 1_000_000  # article ids of the `ood_input` dialogues start here

# a sentence ends with . ! or ? (optionally followed by closing quotes/brackets) before whitespace, or at a
# line break; a full stop after an abbreviation ("H.", "e.g.", "Dr.") does not end one
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "cf", "fig", "approx"})
_WIKITEXT_TITLE = re.compile(r"^ ?= (?!=)(.*\S) = ?$")
_WIKITEXT_SUBHEADING = re.compile(r"^ ?(= ){2,}.*( =){2,} ?$")
_PYDOC_UNDERLINE = re.compile(r"^[*=\-~^]{3,}\s*$")
_TURN_START = re.compile(r"\n(?=\s*#Person\d+#\s*:)")


# ----------------------------------------------------------------------------------------------- text
def detokenize_wikitext(text: str) -> str:
    """Undo WikiText tokenisation: ``1 @,@ 000`` -> ``1,000``, ``a , b`` -> ``a, b``, ``( x )`` -> ``(x)``."""
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = re.sub(r" ('(?:t|s|re|ve|m|ll|d))\b", r"\1", text)
    text = re.sub(r"(\w)s ' ", r"\1s' ", text)
    text = re.sub(r'" ([^"]*?) "', r'"\1"', text)
    text = re.sub(r"\s+([.,;:!?%)\]}])", r"\1", text)
    text = re.sub(r"([(\[{$£€]) +", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, without NLTK (its punkt data is not available offline): every line break ends one,
    and so does ``.``, ``!`` or ``?`` (plus closing quotes/brackets) before whitespace, unless the full stop
    closes an abbreviation (``_is_abbreviation``). Lower-case text splits the same way, so an uncased model's
    output gets the sentence lines rougeLsum needs. The one splitter: chunking here and ROUGE's scoring use it.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for end in _SENTENCE_END.finditer(line):
            if _is_abbreviation(line[start : end.end()].split()[-1]):
                continue
            sentences.append(line[start : end.end()].strip())
            start = end.end()
        sentences.append(line[start:].strip())
    return [sentence for sentence in sentences if sentence]


def _is_abbreviation(word: str) -> bool:
    """``H.``, ``e.g.``, ``U.S.``, ``Dr.``: a single letter, a word with inner full stops, or a known title."""
    if not word.endswith(".") or word.endswith(".."):
        return False
    core = word.rstrip(".").lstrip("\"'([")
    return (len(core) == 1 and core.isalpha()) or "." in core or core.lower() in _ABBREVIATIONS


def pack_sentences(sentences: list[str], target_tokens: int, min_tokens: int) -> list[str]:
    """Pack consecutive sentences into chunks of about ``target_tokens`` whitespace tokens.

    A sentence longer than ``target_tokens`` is cut into pieces of ``target_tokens`` words. A chunk is never
    closed below ``min_tokens`` (a tiny sentence joins the next one); a last chunk shorter than ``min_tokens``
    is merged into the chunk before it, and a lone tiny chunk is dropped.
    """
    chunks: list[list[str]] = []
    current: list[str] = []
    for sentence in sentences:
        for piece in _cut_long(sentence.split(), target_tokens):
            if len(current) >= max(min_tokens, 1) and len(current) + len(piece) > target_tokens:
                chunks.append(current)
                current = []
            current = current + piece
    if current:
        chunks.append(current)
    if chunks and len(chunks[-1]) < min_tokens:
        tail = chunks.pop()
        if chunks:
            chunks[-1] = chunks[-1] + tail
    return [" ".join(words) for words in chunks]


def _cut_long(words: list[str], size: int) -> list[list[str]]:
    return [words[i : i + size] for i in range(0, len(words), size)] if words else []


# --------------------------------------------------------------------------------------------- readers
def read_wikitext(path: Path) -> list[tuple[int, str, list[str]]]:
    """Articles from WikiText raw text: ``(article_id, title, paragraphs)`` with ids 0, 1, ... in file order."""
    articles: list[tuple[int, str, list[str]]] = []
    with open_utf8(path) as fh:  # non-UTF-8 bytes: one line naming line and byte offset
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip() or _WIKITEXT_SUBHEADING.match(line):
                continue
            title = _WIKITEXT_TITLE.match(line)
            if title:
                articles.append((len(articles), detokenize_wikitext(title.group(1)), []))
            elif articles:  # text before the first title belongs to no article
                articles[-1][2].append(detokenize_wikitext(line))
    return articles


def read_jsonl_articles(path: Path) -> list[tuple[int, str, list[str]]]:
    """Articles from JSONL ``{article_id: int, title: str, text: str}``, sorted by id (ids must be unique)."""
    articles, first_line = [], {}
    for lineno, record in iter_jsonl(path):
        require_fields(record, {"article_id": int, "title": str, "text": str}, path, lineno)
        article_id = record["article_id"]
        if isinstance(article_id, bool) or article_id < 0:
            raise VecflowError(f"{where(path, lineno, 'article_id')}: expected a non-negative integer")
        if article_id in first_line:
            raise VecflowError(
                f"{where(path, lineno, 'article_id')}: {article_id} already used on line {first_line[article_id]}"
            )
        first_line[article_id] = lineno
        articles.append((article_id, record["title"], _paragraphs(record["text"])))
    return sorted(articles, key=lambda article: article[0])


def read_pydoc_topics(min_words: int = 50) -> list[tuple[int, str, list[str]]]:
    """Python's pydoc topics, one article per key (sorted), skipping topics under ``min_words`` words.

    Several topics repeat whole sections of others (``compound`` contains ``if``, ``while``, ...); a paragraph
    already used by an earlier topic is left out, so that identical chunks do not end up in two splits.
    """
    from pydoc_data.topics import topics

    articles, seen = [], set()
    for key in sorted(topics):
        lines = topics[key].strip().splitlines()
        title = key
        if len(lines) > 1 and _PYDOC_UNDERLINE.match(lines[1]):
            title, lines = lines[0].strip(), lines[2:]
        text = "\n".join(line for line in lines if not _PYDOC_UNDERLINE.match(line))
        paragraphs = [p for p in _paragraphs(text) if p not in seen]
        if sum(len(p.split()) for p in paragraphs) >= min_words:
            articles.append((len(articles), title, paragraphs))
            seen.update(paragraphs)
    return articles


def split_turns(dialogue: str) -> list[str]:
    """The turns of a dialogue: a new turn starts at each line beginning with ``#PersonN#:``; a line without a
    tag continues the turn before it. Whitespace inside a turn is collapsed; the speaker tag stays."""
    return [" ".join(turn.split()) for turn in _TURN_START.split(dialogue.replace("\r\n", "\n")) if turn.strip()]


def read_dialogue_articles(path: Path, id_offset: int = 0) -> list[tuple[int, str, list[str]]]:
    """Dialogues as articles ``(id_offset + line position, dialogue id, turns)`` (validated by vecflow.data.dialogues)."""
    from vecflow.data.dialogues import load_dialogues

    return [(id_offset + i, record["id"], split_turns(record["dialogue"]))
            for i, record in enumerate(load_dialogues(path))]


def turn_rows(articles, max_articles: int = 0) -> list[dict]:
    """One chunk row per turn (dialogues are not sentence-packed): ``{article_id, title, chunk_index, text}``;
    ``max_articles`` caps the dialogues of the first file."""
    rows: list[dict] = []
    kept = [article for article in articles if article[2]]
    if max_articles:  # the cap applies to the first file; every `ood_input` dialogue is kept
        main_file = [article for article in kept if article[0] < OOD_ID_OFFSET]
        kept = main_file[:max_articles] + [article for article in kept if article[0] >= OOD_ID_OFFSET]
    for article_id, title, turns in kept:
        rows += [{"article_id": article_id, "title": title, "chunk_index": i, "text": turn}
                 for i, turn in enumerate(turns)]
    return rows


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs with their inner whitespace collapsed."""
    blocks = re.split(r"\n\s*\n", text)
    return [" ".join(block.split()) for block in blocks if block.strip()]


def read_articles(source: str, fmt: str, pydoc_min_words: int = 50, ood_source: str = ""
                  ) -> list[tuple[int, str, list[str]]]:
    if fmt not in FORMATS:
        raise VecflowError(f"--format: '{fmt}' is not one of {', '.join(FORMATS)}")
    if ood_source and fmt != "dialogues":
        raise VecflowError(f"settings: lvm.articles.ood_input: only the dialogues format reads a second file "
                           f"(format is {fmt}); remove ood_input or use split ranges")
    if fmt == "pydoc":
        return read_pydoc_topics(pydoc_min_words)
    paths = [Path(source)] + ([Path(ood_source)] if ood_source else [])
    for path in paths:
        require_file(path)
    if fmt == "dialogues":
        articles = read_dialogue_articles(paths[0])
        if len(articles) >= OOD_ID_OFFSET:
            raise VecflowError(f"{paths[0]}: {len(articles)} dialogues; at most {OOD_ID_OFFSET - 1} are supported")
        return articles + (read_dialogue_articles(paths[1], OOD_ID_OFFSET) if ood_source else [])
    return read_wikitext(paths[0]) if fmt == "wikitext" else read_jsonl_articles(paths[0])


# -------------------------------------------------------------------------------------------- chunking
def chunk_articles(articles, target_tokens: int, min_tokens: int, max_articles: int = 0) -> list[dict]:
    """Chunk rows ``{article_id, title, chunk_index, text}`` for the first ``max_articles`` articles with text."""
    if target_tokens < 1 or not 0 <= min_tokens <= target_tokens:
        raise VecflowError(
            f"settings: chunking: need target_tokens >= 1 and 0 <= min_tokens <= target_tokens "
            f"(got target_tokens {target_tokens}, min_tokens {min_tokens})"
        )
    rows: list[dict] = []
    used = 0
    for article_id, title, paragraphs in articles:
        if max_articles and used >= max_articles:
            break
        sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
        chunks = pack_sentences(sentences, target_tokens, min_tokens)
        if not chunks:
            continue
        used += 1
        rows += [
            {"article_id": article_id, "title": title, "chunk_index": i, "text": text} for i, text in enumerate(chunks)
        ]
    return rows


# ------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vecflow chunk-articles", description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="WikiText .txt, articles or dialogue JSONL, or 'pydoc'")
    parser.add_argument("--ood-input", default="", help="dialogues only: a second dialogue JSONL (ids from 1,000,000)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--settings", required=True, type=ChunkSettings.from_json,
                        help="lvm.articles as JSON, with lvm.chunking as `chunking`")
    parser.add_argument("--out", required=True, help="chunks JSONL")
    args = parser.parse_args(argv)

    settings: ChunkSettings = args.settings
    chunking = settings.chunking
    articles = read_articles(args.input, args.format, settings.pydoc_min_words, args.ood_input)
    source = "pydoc_data.topics" if args.format == "pydoc" else args.input
    if not articles:
        raise VecflowError(f"{source}: no articles found (format {args.format})")
    if args.format == "dialogues":
        rows = turn_rows(articles, settings.max_articles)
    else:
        rows = chunk_articles(
            articles,
            target_tokens=chunking.target_tokens,
            min_tokens=chunking.min_tokens,
            max_articles=settings.max_articles,
        )
    if not rows:
        longest = max((sum(len(p.split()) for p in paragraphs) for _, _, paragraphs in articles), default=0)
        raise VecflowError(f"{source}: {len(articles)} articles found but no chunk of at least min_tokens "
                           f"{chunking.min_tokens} words (the longest article has {longest}); lower "
                           f"lvm.chunking.min_tokens or give longer articles")
    write_jsonl(args.out, rows)
    n_articles = len({row["article_id"] for row in rows})
    print(f"[vecflow] {source}: {n_articles} articles -> {len(rows)} chunks -> {args.out}", flush=True)
    return 0
