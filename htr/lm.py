"""Character n-gram language models for beam search (``htr.beam``), written as ARPA files.

``htr lm build`` counts the characters of a config's training transcriptions (never val or test: the LM would
learn the held-out lines) or of any text file, and writes an interpolated Kneser-Ney model that KenLM (inside
flashlight-text) loads. Every character is a token, the space included; it is written as ``SPACE_TOKEN`` because
ARPA separates tokens by whitespace. A small pure-Python writer is enough at this scale (~30k characters of IAM
lines make ~150k n-grams in a few seconds) and needs no ``lmplz`` binary.
"""

from __future__ import annotations

import argparse
import gzip
import io
import math
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from htr.data.texts import (
    TextSource,
    add_text_source,
    capitalized,
    parse_texts,
    punctuation_set_apart,
    set_punctuation_apart,
)

if TYPE_CHECKING:  # htr.beam imports this module: it must not pull in the training side (Lightning, data)
    from htr.data.stats import BuildCLI

SPACE_TOKEN = "<space>"  # the ARPA spelling of " "; longer than a character, so no alphabet can collide with it
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
FALLBACK_DISCOUNT = 0.5  # when count-of-counts cannot estimate one (tiny text), as KenLM's --discount_fallback

Gram = tuple[str, ...]


def lm_token(char: str) -> str:
    """The ARPA token of one character."""
    if char.isspace() and char != " ":
        raise ValueError(f"{char!r}: ARPA tokens cannot hold whitespace other than the space")
    return SPACE_TOKEN if char == " " else char


def _discount(counts: Iterable[int]) -> float:
    """Kneser-Ney's absolute discount D = n1 / (n1 + 2 n2) from how many n-grams occur once and twice."""
    histogram = Counter(counts)
    n1, n2 = histogram[1], histogram[2]
    discount = n1 / (n1 + 2 * n2) if n1 and n2 else FALLBACK_DISCOUNT
    return discount if 0 < discount < 1 else FALLBACK_DISCOUNT


def _counts(texts: Iterable[str], order: int, progress: bool) -> list[Counter[Gram]]:
    """Raw counts of the 1..order-grams of every line, padded with one ``<s>`` and one ``</s>``."""
    from tqdm import tqdm  # here: htr.beam imports this module for lm_token, and beam search needs no tqdm

    counts: list[Counter[Gram]] = [Counter() for _ in range(order)]
    for text in tqdm(texts, desc="counting n-grams", unit=" lines", disable=not progress, file=sys.stderr):
        tokens = (BOS, *map(lm_token, text), EOS)
        for end in range(1, len(tokens) + 1):
            for k in range(1, min(order, end) + 1):
                gram = tokens[end - k : end]
                if gram != (BOS,):
                    counts[k - 1][gram] += 1
    return counts


def kneser_ney(
    texts: Iterable[str], order: int = 6, vocabulary: str = "", progress: bool = False
) -> list[dict[Gram, tuple[float, float | None]]]:
    """Interpolated Kneser-Ney estimates of a character n-gram model.

    Lower orders count how many different characters precede an n-gram (its continuation count) rather than how
    often it occurs, except for n-grams that start a line. The unigrams interpolate with a uniform distribution, so
    characters of ``vocabulary`` absent from the text and ``<unk>`` keep a little probability.

    Args:
        texts: lines of text; each is one sentence from ``<s>`` to ``</s>``.
        order: the longest n-gram.
        vocabulary: characters the model must know even if the text lacks them (the recognizer's alphabet).
        progress: show a progress bar on stderr while counting.

    Returns:
        Per order (index 0: unigrams), n-gram -> (log10 probability, log10 backoff weight or None), as ARPA
        stores them.
    """
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    raw = _counts(texts, order, progress)
    if not raw[0]:
        raise ValueError("no text to estimate a language model from")
    # adjusted counts: raw at the top order and for n-grams starting a line, continuation counts below
    adjusted: list[Counter[Gram]] = [Counter() for _ in range(order)]
    adjusted[order - 1] = raw[order - 1]
    for k in range(order - 1, 0, -1):  # k: index of the longer order
        for gram in raw[k]:
            adjusted[k - 1][gram[1:]] += 1
        for gram, count in raw[k - 1].items():
            if gram[0] == BOS:
                adjusted[k - 1][gram] = count
    vocab = {gram[0] for gram in adjusted[0]} | {lm_token(c) for c in vocabulary} | {EOS, UNK}
    probs: list[dict[Gram, float]] = [{} for _ in range(order)]
    backoffs: list[dict[Gram, float]] = [{} for _ in range(order)]
    for k in range(order):
        discount = _discount(adjusted[k].values())
        totals: dict[Gram, int] = defaultdict(int)
        types: dict[Gram, int] = defaultdict(int)
        for gram, count in adjusted[k].items():
            totals[gram[:-1]] += count
            types[gram[:-1]] += 1
        gammas = {context: discount * types[context] / total for context, total in totals.items()}
        grams: Iterable[Gram] = adjusted[k] if k else [(token,) for token in vocab]  # unigrams: all of the vocabulary
        for gram in grams:
            count, context = adjusted[k].get(gram, 0), gram[:-1]
            lower = probs[k - 1][gram[1:]] if k else 1 / len(vocab)
            probs[k][gram] = max(count - discount, 0) / totals[context] + gammas[context] * lower
        if k:
            backoffs[k - 1] = gammas
    return [
        {gram: (math.log10(p), _log10(backoffs[k].get(gram)) if k < order - 1 else None) for gram, p in level.items()}
        | ({(BOS,): (-99.0, _log10(backoffs[0].get((BOS,), 1.0)))} if k == 0 else {})
        for k, level in enumerate(probs)
    ]


def _log10(weight: float | None) -> float | None:
    return None if weight is None else math.log10(weight)


def open_arpa(path: Path, mode: str) -> TextIO:
    """An ARPA file as text, gzip-compressed when its name ends in ``.gz``: KenLM reads those as they are, and a
    shipped model's LM takes a quarter of the bytes (27 MB -> 7 MB for handwriting-en's, unpruned)."""
    if path.suffix != ".gz":
        return path.open(mode, encoding="utf-8")
    # no timestamp in the header: the same model writes the same bytes
    return io.TextIOWrapper(gzip.GzipFile(path, mode + "b", compresslevel=9, mtime=0), encoding="utf-8")


def copy_arpa(source: str | Path, target: str | Path) -> Path:
    """``source``'s ARPA text written to ``target``, each gzip-compressed or not by its name (``open_arpa``)."""
    with open_arpa(Path(source), "r") as text, open_arpa(Path(target), "w") as out:
        shutil.copyfileobj(text, out)
    return Path(target)


def arpa_counts(path: str | Path) -> list[int]:
    """How many n-grams of each order an ARPA file holds, from its ``\\data\\`` header (the file is tens of MB)."""
    counts = []
    with open_arpa(Path(path), "r") as lines:
        for line in lines:
            if line.startswith("ngram "):
                counts.append(int(line.split("=", 1)[1]))
            elif counts and not line.strip():
                break
    return counts


def write_arpa(model: list[dict[Gram, tuple[float, float | None]]], path: str | Path) -> Path:
    """Write ``kneser_ney``'s estimates as an ARPA file (gzip-compressed for a ``.gz`` path); n-grams in sorted
    order, so the file is reproducible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_arpa(path, "w") as out:
        out.write("\\data\\\n")
        for k, level in enumerate(model, start=1):
            out.write(f"ngram {k}={len(level)}\n")
        for k, level in enumerate(model, start=1):
            out.write(f"\n\\{k}-grams:\n")
            for gram in sorted(level):
                prob, backoff = level[gram]
                out.write(f"{prob:.6f}\t{' '.join(gram)}" + (f"\t{backoff:.6f}\n" if backoff is not None else "\n"))
        out.write("\n\\end\\\n")
    return path


def read_arpa(path: str | Path) -> list[dict[Gram, tuple[float, float | None]]]:
    """An ARPA file (plain or ``.gz``) as ``kneser_ney`` returns a model: per order, n-gram -> (log10 prob, log10
    backoff or None).

    Raises:
        ValueError: the file is not ARPA (an n-gram line outside a section, or a section it does not announce).
    """
    model: list[dict[Gram, tuple[float, float | None]]] = []
    with open_arpa(Path(path), "r") as lines:
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or line.startswith(("\\data\\", "ngram ", "\\end\\")):
                continue
            if line.startswith("\\") and line.rstrip().endswith("-grams:"):
                model.append({})
                continue
            k = len(model)
            if k == 0 or len(fields) not in (k + 1, k + 2):
                raise ValueError(f"{path}:{number}: not an ARPA n-gram line of order {k}: {line.strip()[:80]!r}")
            backoff = float(fields[k + 1]) if len(fields) == k + 2 else None
            model[-1][tuple(fields[1 : k + 1])] = (float(fields[0]), backoff)
    return model


def _line_bytes(gram: Gram, backoff: bool) -> int:
    """About the bytes of the ARPA line ``write_arpa`` writes for ``gram`` ("-1.234567" probability and backoff)."""
    return len(" ".join(gram).encode()) + 11 + (10 if backoff else 0)


def prune_arpa(source: str | Path, target: str | Path, max_bytes: int, min_order: int = 3) -> Path:
    """Write ``source``'s model within ``max_bytes`` (of the file as written: gzip-compressed for a ``.gz``
    ``target``), dropping the n-grams (of ``min_order`` and up) that its backoff predicts best, so that a size budget
    costs less than cutting whole orders (IAM fold 0 at the same 2.5 MB: 18.8% CER against 20.2% for the model cut
    to 4-grams; docs/benchmarks.md).

    Each n-gram ``h w`` is ranked by its weight in the model's own text times how much its backoff estimate
    misses, ``P(h w) * (log p(w | h) - log(alpha(h) p(w | h')))``: Stolcke's relative-entropy criterion, taken once
    rather than re-estimated as n-grams go. The kept n-grams' contexts and suffixes stay too (KenLM looks them up),
    and each context's backoff weight is re-normalised over what is left, so every distribution still sums to one.

    Raises:
        ValueError: ``max_bytes`` cannot hold even the orders below ``min_order``.
    """
    model = read_arpa(source)
    top = len(model)
    floor = sum(_line_bytes(g, b is not None) for level in model[: min_order - 1] for g, (_, b) in level.items())

    def log_p(gram: Gram) -> float:  # log10 p(last | rest) under the full model, backing off as KenLM does
        for start in range(len(gram)):
            tail = gram[start:]
            if tail in model[len(tail) - 1]:
                return model[len(tail) - 1][tail][0] + sum(
                    model[len(gram) - s - 2].get(gram[s:-1], (0.0, 0.0))[1] or 0.0 for s in range(start)
                )
        return model[0][(UNK,)][0]

    joint: dict[Gram, float] = {}  # log10 P(gram) in the model's text: the chain of its own probabilities

    def log_joint(gram: Gram) -> float:
        if gram not in joint:
            own = 0.0 if gram[-1] == BOS else log_p(gram)
            joint[gram] = own + (log_joint(gram[:-1]) if len(gram) > 1 else 0.0)
        return joint[gram]

    ranked = []
    for k in range(min_order - 1, top):
        for gram, (prob, _) in model[k].items():
            backoff = model[k - 1].get(gram[:-1], (0.0, 0.0))[1] or 0.0
            miss = prob - (backoff + log_p(gram[1:]))
            ranked.append((10 ** log_joint(gram) * miss, gram))
    ranked.sort(key=lambda item: item[0], reverse=True)
    compressed = Path(target).suffix == ".gz"  # what a text line costs is then known only once written
    if compressed:
        budget = sum(_line_bytes(g, len(g) < top) for level in model[min_order - 1 :] for g in level)
    else:
        budget = max_bytes - floor
    while True:  # the line sizes are estimates: shrink the budget by what the written file overshoots
        if budget <= 0:
            raise ValueError(f"{max_bytes} bytes cannot hold the 1..{min_order - 1}-grams of {source}")
        write_arpa(_renormalised(model, _prune_to_fit(ranked, model, min_order, budget), min_order), target)
        size = Path(target).stat().st_size
        if size <= max_bytes:
            return Path(target)
        budget = int(budget * max_bytes / size * 0.99) if compressed else budget - (size - max_bytes) - 64


def _renormalised(model: list[dict], kept: set[Gram], min_order: int) -> list[dict]:
    """``model`` with only the ``kept`` n-grams of ``min_order`` and up, each context's backoff weight set so that
    its distribution sums to one again: (1 - kept mass) / (1 - the lower order's mass of the same words)."""
    pruned = model[: min_order - 1] + [
        {gram: value for gram, value in level.items() if gram in kept} for level in model[min_order - 1 :]
    ]
    for k in range(min_order - 2, len(model) - 1):
        children: dict[Gram, list[Gram]] = defaultdict(list)
        for gram in pruned[k + 1]:
            children[gram[:-1]].append(gram)
        for context, (prob, _) in pruned[k].items():
            kept_mass = sum(10 ** pruned[k + 1][g][0] for g in children[context])
            lower_mass = sum(10 ** pruned[k][g[1:]][0] for g in children[context])
            alpha = max(1.0 - kept_mass, 1e-12) / max(1.0 - lower_mass, 1e-12)
            pruned[k][context] = (prob, math.log10(alpha))
    pruned[-1] = {gram: (prob, None) for gram, (prob, _) in pruned[-1].items()}
    return pruned


def _prune_to_fit(ranked: list[tuple[float, Gram]], model: list[dict], min_order: int, budget: int) -> set[Gram]:
    """The best-ranked n-grams, with the contexts and suffixes they need, that fit ``budget`` bytes."""
    keep = len(ranked)
    while True:
        kept = {gram for _, gram in ranked[:keep]}
        for k in range(len(model) - 1, min_order - 1, -1):  # top down: a kept n-gram keeps its context and suffix
            for gram in [g for g in kept if len(g) == k + 1]:
                kept.update((gram[:-1], gram[1:]))
        size = sum(_line_bytes(g, len(g) < len(model)) for g in kept if len(g) >= min_order)
        if size <= budget or keep == 0:
            return kept
        keep = max(0, int(keep * budget / size * 0.98))


def build_arpa(texts: Iterable[str], path: str | Path, order: int = 6, vocabulary: str = "") -> Path:
    """Estimate a character ``order``-gram Kneser-Ney model of ``texts`` and write it to ``path`` (ARPA)."""
    return write_arpa(kneser_ney(texts, order, vocabulary, progress=True), path)


def lm_texts(
    texts: Sequence[str],
    vocabulary: str = "",
    language: str | None = None,
    general_text: Sequence[str] = (),
    word_lines: int = 20_000,
    text_weight: int = 5,
) -> tuple[list[str], set[str]]:
    """The lines an LM learns from and the words of its lexicon: ``texts`` alone, or, with a ``language`` or
    ``general_text``, ``texts`` repeated ``text_weight`` times, plus ``word_lines`` lines drawn from the general word
    statistics of ``language`` (``TextSource.from_wordfreq``; their words, also capitalised, join the lexicon), plus
    the lines of ``general_text`` (``spelled_like``; real sentences teach what follows what across words, which
    lines of words drawn one by one cannot). ``vocabulary``: the model's characters, else the texts'."""
    words = {word for text in texts for word in text.split()}
    if language is None and not general_text:
        return list(texts), words
    lines = [*texts] * text_weight
    if language is not None:
        general = TextSource.from_wordfreq(language, texts, vocabulary or "".join(sorted(set("".join(texts)))))
        rng = np.random.default_rng(0)
        words |= {form for word in general.words for form in (word, capitalized(word))}
        lines += [general.line(rng) for _ in range(word_lines)]
    return lines + list(general_text), words


def spelled_like(lines: Iterable[str], texts: Sequence[str], vocabulary: str = "") -> tuple[list[str], int]:
    """``lines`` of a general text written as the training ``texts`` are: punctuation set apart by spaces when
    they set it apart (IAM writes "Mr. Smith , he said ."), and without the lines that hold a character outside
    ``vocabulary`` (default: the texts' characters), which the LM could only learn as unknowns. Returns the
    lines and how many were left out."""
    allowed = set(vocabulary or "".join(texts)) | {" "}
    detach = punctuation_set_apart(texts)
    kept, dropped = [], 0
    for line in lines:
        line = " ".join(line.split())
        if not line:
            continue
        if detach:
            line = set_punctuation_apart(line)
        if set(line) <= allowed:
            kept.append(line)
        else:
            dropped += 1
    return kept, dropped


def write_lexicon(words: Iterable[str], path: str | Path) -> Path:
    """One word per line, sorted: the ``lexicon`` file of ``htr.beam.BeamSearchDecoder``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{word}\n" for word in sorted(words)), encoding="utf-8")
    return path


def main(args: Sequence[str] | None, build_cli: BuildCLI) -> Path:
    """``htr lm build``; ``build_cli`` is ``htr.cli.build_cli``, passed in as to ``htr data stats``."""
    parser = argparse.ArgumentParser(
        prog="htr lm build",
        description="""Write a character n-gram language model (ARPA, interpolated Kneser-Ney) for beam search,
from the training transcriptions of a config (train split only, never val/test) or from a UTF-8 text file (one
sentence per line). Every character is a token; the space is written <space>. Further arguments after --config
override the config as for htr fit (e.g. --data.init_args.data_dir DIR).

  htr lm build --config configs/iam_lines_cpu.yaml --output lm/iam_char6.arpa
  htr test --config configs/iam_lines_cpu.yaml --ckpt_path BEST.ckpt \\
      --model.decoder htr.beam.BeamSearchDecoder --model.decoder.lm lm/iam_char6.arpa
  htr transcribe --model BEST.ckpt --lm lm/iam_char6.arpa --beam-width 10 LINES/

With --words LANG the model also learns the general word statistics of the language (the wordfreq package: pip
install 'htr[lm]'), which a few hundred training lines lack; --lexicon writes the words the decoder may spell:

  htr lm build --config configs/iam_lines_cpu.yaml --words en --output lm/iam_en.arpa --lexicon lm/iam_en.txt
  htr test ... --model.decoder htr.beam.BeamSearchDecoder --model.decoder.beam_width 30 \\
      --model.decoder.lm lm/iam_en.arpa --model.decoder.lexicon lm/iam_en.txt

--general-text adds real sentences of the language (e.g. Debian's English fortunes, which scripts/prepare_text.py
writes; what they gain: docs/benchmarks.md), punctuation spaced as in the training lines:

  htr lm build --config configs/iam_lines_cpu.yaml --words en --general-text data/text/en.txt \\
      --output lm/words.arpa --lexicon lm/words.txt""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_text_source(parser, "a UTF-8 text file, one sentence per line")
    parser.add_argument("--order", type=int, default=6, help="longest n-gram, in characters (default 6)")
    parser.add_argument("--output", "-o", type=Path, required=True, help="the ARPA file to write")
    parser.add_argument("--words", metavar="LANG", help="add the general word statistics of LANG (en, fr, de...)")
    parser.add_argument(
        "--word-lines", type=int, default=20_000, help="lines drawn from --words' statistics (default 20000)"
    )
    parser.add_argument(
        "--general-text",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="UTF-8 text of the language, one line each (e.g. scripts/prepare_text.py): spelled like the source",
    )
    parser.add_argument(
        "--text-weight",
        type=int,
        default=5,
        help="times each source line counts against a --words or --general-text line (default 5)",
    )
    parser.add_argument("--lexicon", type=Path, help="also write the words (source and --words) to this file")
    options, texts, vocabulary = parse_texts(parser, args, build_cli)
    texts = [text for text in texts if text.strip()]
    general: list[str] = []
    for file in options.general_text:
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            parser.error(f"--general-text: no text file at {file}")
        except UnicodeDecodeError as error:
            parser.error(f"--general-text: {file} is not UTF-8 text (byte {error.start}: {error.reason})")
        lines, dropped = spelled_like(text.splitlines(), texts, vocabulary)
        print(f"{file}: {len(lines)} lines ({dropped} left out: characters outside the charset)")
        general += lines
    corpus, words = lm_texts(texts, vocabulary, options.words, general, options.word_lines, options.text_weight)
    path = build_arpa(corpus, options.output, options.order, vocabulary)
    print(f"wrote {path}: {options.order}-gram over {len(corpus)} lines, {sum(map(len, corpus))} characters")
    if options.lexicon is not None:
        write_lexicon(words, options.lexicon)
        print(f"wrote {options.lexicon}: {len(words)} words")
    return path
