"""CTC prefix beam search with an optional character n-gram language model and lexicon (flashlight-text).

The language model is an ARPA file of characters (``htr lm build``), loaded by the KenLM inside flashlight-text.
Every character is a token, the space included (spelled ``htr.lm.SPACE_TOKEN`` in the file). Without a lexicon
any string can come out and the model scores each character (flashlight's ``LexiconFreeDecoder``); with one, the
letters of a line must spell lexicon words (``LexiconDecoder`` over a trie of spellings), while spaces, digits and
punctuation stay free.

Confidences measure the optical model alone, as for ``GreedyDecoder``, so a calibration fitted on greedy output
keeps its meaning and a beam of width 1 without a language model returns exactly what greedy does: ``decode`` scores
the chosen text's line confidence with the optical model's CTC forward score (every alignment of that text, per
character), and a character's is the highest probability of its class over the steps that emit it in the best
alignment flashlight returns (the class of every time step). The language model's own score does not enter: a
line it made likely but the image does not support stays unsure.

KenLM prints a notice and a progress bar to the process's stdout and stderr while it reads an ARPA file; they stay
off the terminal (``htr.quiet.quiet_native_output``) unless ``--verbose``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flashlight.lib.text.decoder import (
    LM,
    CriterionType,
    LexiconDecoder,
    LexiconDecoderOptions,
    LexiconFreeDecoder,
    LexiconFreeDecoderOptions,
    SmearingMode,
    Trie,
    ZeroLM,
)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from htr.alphabet import BLANK, Alphabet
from htr.decoding import DecodedPath, Decoder
from htr.lm import lm_token
from htr.quiet import quiet_native_output

BLANK_TOKEN = "<blank>"  # the LM never sees it; flashlight's dictionary needs a name for every class
FILE_ARGUMENTS = ("lm", "lexicon")  # init arguments that name files


class BeamSearchDecoder(Decoder):
    """CTC beam search over prefixes, optionally scored by a character language model and held to a lexicon.

    flashlight's decoder (and the LM in it) is built on the first call, for the alphabet of the model it decodes.

    Args:
        beam_width: hypotheses kept per time step; 1 without ``lm`` is greedy decoding.
        lm: ARPA file of a character n-gram model (``htr lm build``); none: the optical model alone.
        lm_weight: weight of the language model's natural-log probability against the optical model's.
        word_score: an insertion bonus that offsets the language model's cost of every character (which favours
            shorter outputs otherwise): per word with a lexicon; without one, per time step of a character class,
            since flashlight's lexicon-free search has no per-token bonus (CTC emits most characters on one step).
        lexicon: text file whose lines start with a word; the letters of the output must spell these words.
        beam_threshold: drop hypotheses whose log score is this far below the step's best.
        beam_size_token: classes tried per step, the most probable first; all when None.
        log_add: merge hypotheses with the same text by summing their probabilities (prefix beam search);
            False keeps the best alignment's (Viterbi).
    """

    def __init__(
        self,
        beam_width: int = 10,
        lm: str | Path | None = None,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        lexicon: str | Path | None = None,
        beam_threshold: float = 25.0,
        beam_size_token: int | None = None,
        log_add: bool = True,
    ) -> None:
        if beam_width < 1:
            raise ValueError(f"beam_width must be at least 1, got {beam_width}")
        self.beam_width = beam_width
        self.lm = None if lm is None else str(lm)
        self.lm_weight = lm_weight
        self.word_score = word_score
        self.lexicon = None if lexicon is None else str(lexicon)
        self.beam_threshold = beam_threshold
        self.beam_size_token = beam_size_token
        self.log_add = log_add
        self._built: tuple[Alphabet, LexiconDecoder | LexiconFreeDecoder] | None = None

    def _decoder(self, alphabet: Alphabet) -> LexiconDecoder | LexiconFreeDecoder:
        """flashlight's decoder for ``alphabet``, built once (loading the LM takes a moment)."""
        if self._built is None or self._built[0] != alphabet:
            self._built = alphabet, self._build(alphabet)
        return self._built[1]

    def files(self) -> dict[str, str]:
        """The files this decoder reads, by argument name (``lm``, ``lexicon``): what travels with a logged model."""
        return {name: path for name in FILE_ARGUMENTS if (path := getattr(self, name)) is not None}

    def with_files(self, files: Mapping[str, str]) -> BeamSearchDecoder:
        """A copy that reads its files from ``files`` (argument name -> path), e.g. a logged model's artifacts."""
        return self._replaced(**{name: files[name] for name in self.files() if name in files})

    def with_beam_width(self, beam_width: int) -> BeamSearchDecoder:
        """A copy that keeps ``beam_width`` hypotheses per step, its LM, lexicon and weights unchanged."""
        return self._replaced(beam_width=beam_width)

    def _replaced(self, **changes: Any) -> BeamSearchDecoder:
        """A new decoder with these init arguments changed (flashlight's objects are built again on first use)."""
        return BeamSearchDecoder(**{**self.__getstate__(), **changes})

    def _build(self, alphabet: Alphabet) -> LexiconDecoder | LexiconFreeDecoder:
        # The files are opened here, not in __init__, so that a checkpoint naming them loads anywhere and a logged
        # model can point the decoder at its own copies (``with_files``) before the first decode.
        for name, path in self.files().items():
            if not Path(path).is_file():
                raise FileNotFoundError(f"BeamSearchDecoder {name}: no file at {path}")
        tokens = [BLANK_TOKEN, *map(lm_token, alphabet.chars)]
        if self.lm is None:
            language_model: LM = ZeroLM()
        else:
            with quiet_native_output():  # "Loading the LM will be faster if you build a binary file", 100 stars
                language_model = KenLM(self.lm, Dictionary(tokens))
        num_classes = alphabet.num_classes
        space = alphabet.encode(" ")[0] if " " in alphabet.chars else BLANK
        # KenLM scores in log10; the emissions are natural logs
        lm_weight = self.lm_weight * math.log(10) if self.lm is not None else 0.0
        beam_size_token = min(self.beam_size_token or num_classes, num_classes)
        if self.lexicon is None:
            options = LexiconFreeDecoderOptions(
                self.beam_width, beam_size_token, self.beam_threshold, lm_weight, 0.0, self.log_add, CriterionType.CTC
            )
            return LexiconFreeDecoder(options, language_model, space, BLANK, [])
        words = self._lexicon_words(alphabet)
        trie = Trie(num_classes, space)
        for label, word in enumerate(words):
            trie.insert(alphabet.encode(word), label, 0.0)  # a character LM scores tokens, not words
        trie.smear(SmearingMode.MAX)
        options = LexiconDecoderOptions(
            self.beam_width, beam_size_token, self.beam_threshold, lm_weight, self.word_score, -math.inf, 0.0,
            self.log_add, CriterionType.CTC,
        )  # fmt: skip
        return LexiconDecoder(options, trie, language_model, space, BLANK, len(words), [], True)

    def _lexicon_words(self, alphabet: Alphabet) -> list[str]:
        """The lexicon's words the alphabet can spell, plus every character that is not a letter as a word."""
        assert self.lexicon is not None
        words = {
            line.split()[0] for line in Path(self.lexicon).read_text(encoding="utf-8").splitlines() if line.strip()
        }
        spellable = sorted(word for word in words if not alphabet.unknown(word))
        if not spellable:
            raise ValueError(f"no word of the lexicon {self.lexicon} is spelled in the alphabet {alphabet.chars!r}")
        return spellable + [c for c in alphabet.chars if not c.isalpha() and c not in words]

    def __call__(self, log_probs: torch.Tensor, lengths: torch.Tensor, alphabet: Alphabet) -> list[DecodedPath]:
        if log_probs.shape[-1] != alphabet.num_classes:
            raise ValueError(f"log_probs have {log_probs.shape[-1]} classes, {alphabet} needs {alphabet.num_classes}")
        decoder = self._decoder(alphabet)
        emissions = np.ascontiguousarray(log_probs.detach().float().cpu().transpose(0, 1).numpy())  # (N, T, C)
        scores = emissions
        if self.lexicon is None and self.word_score:
            scores = emissions.copy()
            scores[:, :, BLANK + 1 :] += self.word_score  # confidences still come from the unbiased emissions
        paths = []
        for sample, score, length in zip(emissions, scores, lengths.tolist()):
            steps = int(length)
            if steps == 0:
                paths.append(DecodedPath([], [], 1.0))
                continue
            score = score[:steps]  # (T, C), still contiguous
            best = decoder.decode(score.ctypes.data, steps, score.shape[1])[0]
            paths.append(_path(sample[:steps], list(best.tokens)[1 : steps + 1]))  # drops start and end "silence"
        return paths

    def __getstate__(self) -> dict[str, Any]:
        """The init arguments only: flashlight's objects cannot be pickled (checkpoints, deepcopy)."""
        return {key: value for key, value in self.__dict__.items() if key != "_built"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.__getstate__().items())
        return f"{type(self).__name__}({args})"


def config_settings(config: str | Path) -> dict[str, Any]:
    """The ``BeamSearchDecoder`` arguments of a decoder config's ``model.decoder`` (``configs/decoders/*.yaml``)
    without its files: what a fold benchmark or a shipped model reuses with LM and lexicon files of its own."""
    import yaml  # here: PyYAML comes with the training extra, and reading imports this module

    init_args = yaml.safe_load(Path(config).read_text(encoding="utf-8"))["model"]["decoder"]["init_args"]
    return {key: value for key, value in init_args.items() if key not in FILE_ARGUMENTS}


def _path(log_probs: np.ndarray, steps: list[int]) -> DecodedPath:
    """Class ids and confidences of one alignment (the class of every time step), as ``GreedyDecoder`` gives them."""
    ids: list[int] = []
    confidences: list[float] = []
    previous = BLANK
    for t, token in enumerate(steps):
        prob = math.exp(log_probs[t, token])
        if token != BLANK and token != previous:
            ids.append(token)
            confidences.append(prob)
        elif token != BLANK:
            confidences[-1] = max(confidences[-1], prob)
        previous = token
    line = float(np.exp(log_probs[np.arange(len(steps)), steps].sum()))
    return DecodedPath(ids, confidences, line)
