"""Character n-gram language models for beam search (``htr.beam``), written as ARPA files.

``htr lm build`` counts the characters of a config's training transcriptions (never val or test: the LM would
learn the held-out lines) or of any text file, and writes an interpolated Kneser-Ney model that KenLM (inside
flashlight-text) loads. Every character is a token, the space included; it is written as ``SPACE_TOKEN`` because
ARPA separates tokens by whitespace. A small pure-Python writer is enough at this scale (~30k characters of IAM
lines make ~150k n-grams in a few seconds) and needs no ``lmplz`` binary.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

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


def write_arpa(model: list[dict[Gram, tuple[float, float | None]]], path: str | Path) -> Path:
    """Write ``kneser_ney``'s estimates as an ARPA file; n-grams in sorted order, so the file is reproducible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
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
    """An ARPA file as ``kneser_ney`` returns a model: per order, n-gram -> (log10 prob, log10 backoff or None).

    Raises:
        ValueError: the file is not ARPA (an n-gram line outside a section, or a section it does not announce).
    """
    model: list[dict[Gram, tuple[float, float | None]]] = []
    with Path(path).open(encoding="utf-8") as lines:
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


def truncate_arpa(source: str | Path, target: str | Path, order: int) -> Path:
    """Write ``source``'s model without its n-grams longer than ``order``: a smaller LM (to ship one within a size
    budget) that backs off sooner. The kept orders stay as they are (in Kneser-Ney, estimates from continuation
    counts: close to, not equal to, a model built at that order); only the new top order loses its backoffs."""
    model = read_arpa(source)[:order]
    model[-1] = {gram: (prob, None) for gram, (prob, _) in model[-1].items()}
    return write_arpa(model, target)


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
