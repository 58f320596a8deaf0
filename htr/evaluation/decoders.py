"""The beam-search decoders a benchmark reads a fold's test lines with, each built from that fold's training lines
only (the test writers' or documents' text stays unseen). Weights were chosen on IAM fold 0's validation writers
(a grid of LM weight 0.2-0.8 and bonus -1 to 4, beam 10 and 30):

- ``beam_lm``: a character n-gram of the training lines; beam 10, LM weight 0.4, bonus 2.0 per character step;
- ``beam_words``: the n-gram of the training lines (x5) and 20,000 lines of a language's general word statistics
  (wordfreq), held to a lexicon of their words; beam width, LM weight and score per word read from
  ``configs/decoders/beam_words.yaml``, the decoder training composes;
- ``beam_text``: as ``beam_words``, its LM also learning the lines of a general text of the language
  (``--general-text``, e.g. scripts/prepare_text.py), spelled like the training lines (``htr.lm.spelled_like``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from htr.beam import BeamSearchDecoder, config_settings
from htr.data.download import CHECKOUT
from htr.lm import build_arpa, lm_texts, spelled_like, write_lexicon

# The word decoder's settings live in the config that training composes; the fold decoders read them from it.
BEAM_WORDS_CONFIG = CHECKOUT / "configs" / "decoders" / "beam_words.yaml"


def text_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (an argparse type: a missing file is a usage error that names it)."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise argparse.ArgumentTypeError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason})") from None


def fold_decoders(
    texts: Sequence[str],
    charset: str,
    workdir: Path,
    fold: int,
    order: int = 6,
    language: str | None = "en",
    general_text: Sequence[str] = (),
) -> dict[str, BeamSearchDecoder]:
    """``beam_lm`` and, given a ``language``, ``beam_words`` and (with ``general_text`` lines) ``beam_text``, with
    their files written to ``workdir``."""
    lm = build_arpa(texts, workdir / f"fold{fold}_char{order}.arpa", order, charset)
    decoders = {"beam_lm": BeamSearchDecoder(10, lm, lm_weight=0.4, word_score=2.0)}
    if language:
        general, words = lm_texts(texts, charset, language)
        lm_words = build_arpa(general, workdir / f"fold{fold}_char{order}_{language}.arpa", order, charset)
        lexicon = write_lexicon(words, workdir / f"fold{fold}_{language}_words.txt")
        settings = config_settings(BEAM_WORDS_CONFIG)
        decoders["beam_words"] = BeamSearchDecoder(lm=lm_words, lexicon=lexicon, **settings)
        if general_text:
            spelled, _ = spelled_like(general_text, texts, charset)  # what lm_texts(..., spelled) adds to `general`
            lm_text = build_arpa(
                general + spelled, workdir / f"fold{fold}_char{order}_{language}_text.arpa", order, charset
            )
            decoders["beam_text"] = BeamSearchDecoder(lm=lm_text, lexicon=lexicon, **settings)
    return decoders
