"""WordPiece tokenization with character offsets, shared by training, conversion and serving.

The vocab is a BERT/ERNIE style ``vocab.txt`` (one token per line, id = line number). Text is read
the way BERT's basic tokenizer reads it (Google BERT, PaddleNLP, ``transformers``' Python
``BasicTokenizer``), with the checkpoint's :class:`TokenizerSettings` (``tokenizer_config.json``):

1. drop NUL, U+FFFD and every character of a Unicode category ``C*`` except tab, newline and
   carriage return; tab, newline, carriage return and ``Zs`` spaces become spaces (as does other
   Unicode whitespace, which BERT's ``str.split`` splits words on too);
2. put spaces around CJK ideographs (so each becomes one word);
3. when lowercasing: ``str.lower`` (a capital sigma that ends a word becomes final ``ς``);
4. when stripping accents (by default exactly when lowercasing): NFD, then drop the ``Mn``
   (non-spacing mark) characters;
5. split into words on whitespace and around punctuation (ASCII non-alphanumerics and ``P*``),
   then each word into WordPiece pieces (a word without a split, or longer than 100 characters,
   is one ``[UNK]``).

The steps run as HF ``tokenizers`` normalizers and pre-tokenizers, with the character classes
taken from Python's :mod:`unicodedata` (as the Python tokenizers use them): the built-in
``BertNormalizer``/``BertPreTokenizer`` use older Unicode tables, skip unassigned code points and
CJK Extension E's first 256 ideographs, and lowercase sigma without context. ``transformers``'
Python tokenizer also composes NFC before lowercasing, which Google BERT and PaddleNLP do not; we
follow them (this only matters when accents are kept). Offsets are character offsets into the
original (un-normalized) string of the segment they belong to.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from os import environ
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

logger = logging.getLogger(__name__)

PARALLELISM_ENV = "TOKENIZERS_PARALLELISM"


def tokenize_in_calling_threads() -> None:
    """Make HF ``tokenizers`` encode batches in the calling thread, without its own thread pool
    (unless ``TOKENIZERS_PARALLELISM`` is already set).

    For a server: its request threads already tokenize side by side, a request's batch is a few
    texts, and the pool's threads spin after each batch on the cores the engine needs next.
    Call it at the entry point, before the first batch; forked processes inherit it.
    """
    environ.setdefault(PARALLELISM_ENV, "false")


PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
TOKENIZER_CONFIG = "tokenizer_config.json"
MAX_INPUT_CHARS_PER_WORD = 100

# CJK Unified Ideographs Extension E starts at U+2B820 (BERT's range); tokenizers' BertNormalizer
# starts its range at U+2B920, so the first 256 are split off by the pre-tokenizer instead.
_CJK_EXT_E_HEAD = (0x2B820, 0x2B91F)


@dataclass(frozen=True)
class Encoded:
    """One model row: ``[CLS] prompt [SEP] text [SEP]`` (pair) or ``[CLS] text [SEP]`` (single).

    ``offsets[i]`` is the char span of token ``i`` in its own segment; special tokens get (0, 0).
    ``text_start`` is the index of the first text token (1 for single, len(prompt)+2 for pair),
    ``text_end`` is one past the last text token.
    """

    input_ids: tuple[int, ...]
    token_type_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    text_start: int
    text_end: int

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class TokenizerSettings:
    """How a checkpoint's tokenizer reads text: ``do_lower_case`` and ``strip_accents`` of its
    ``tokenizer_config.json``. ``strip_accents=None`` means: strip exactly when lowercasing (as
    ``BertTokenizer`` does)."""

    lowercase: bool = True
    strip_accents: bool | None = None

    @property
    def effective_strip_accents(self) -> bool:
        """Whether accents are stripped (``strip_accents``, or ``lowercase`` when it is None)."""
        return self.lowercase if self.strip_accents is None else self.strip_accents


DEFAULT_SETTINGS = TokenizerSettings()  # BERT's: lowercase and strip accents


def read_tokenizer_settings(checkpoint_dir: str | Path) -> TokenizerSettings:
    """The settings of ``checkpoint_dir/tokenizer_config.json`` (defaults without the file or keys).

    Raises ``ValueError`` naming the file when it is not a JSON object, when ``do_lower_case`` is
    not a boolean or ``strip_accents`` neither a boolean nor null, or when it turns off
    ``tokenize_chinese_chars`` (which this tokenizer does not support).
    """
    path = Path(checkpoint_dir) / TOKENIZER_CONFIG
    if not path.is_file():
        return TokenizerSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable as JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    lowercase = data.get("do_lower_case", True)
    if not isinstance(lowercase, bool):
        raise ValueError(f"{path}: do_lower_case must be true or false, got {lowercase!r}")
    strip = data.get("strip_accents")
    if strip is not None and not isinstance(strip, bool):
        raise ValueError(f"{path}: strip_accents must be true, false or null, got {strip!r}")
    if data.get("tokenize_chinese_chars", True) is not True:
        raise ValueError(f"{path}: tokenize_chinese_chars other than true is not supported")
    settings = TokenizerSettings(lowercase=lowercase, strip_accents=strip)
    logger.debug("%s: %s", path, settings)
    return settings


def _char_class(codepoints: Iterable[int]) -> str:
    """A regex character class (Oniguruma syntax) matching exactly ``codepoints`` (sorted)."""
    ranges: list[list[int]] = []
    for cp in codepoints:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    parts = (f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return "[" + "".join(parts) + "]"


@dataclass(frozen=True)
class _CharClasses:
    """Python's :mod:`unicodedata` view of the characters the steps treat specially."""

    removed: str  # dropped by the cleaning step
    marks: str  # Mn: dropped when stripping accents
    splits: str  # punctuation and the CJK ideographs BertNormalizer misses: words of their own
    nfd_patches: tuple[tuple[str, str], ...]  # (char, its NFD) where tokenizers' NFD differs


def _is_punctuation(cp: int, category: str) -> bool:
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or category[0] == "P"


@lru_cache(maxsize=1)
def _char_classes() -> _CharClasses:
    removed, marks, splits, patches = [], [], [], []
    lo, hi = _CJK_EXT_E_HEAD
    nfd = normalizers.NFD()
    for cp in range(0x110000):
        char = chr(cp)
        category = unicodedata.category(char)
        if category == "Cs":  # surrogates cannot reach the tokenizer
            continue
        if (category[0] == "C" and char not in "\t\n\r") or cp == 0xFFFD:
            removed.append(cp)
        elif category == "Mn":
            marks.append(cp)
        elif _is_punctuation(cp, category) or lo <= cp <= hi:
            splits.append(cp)
        decomposition = unicodedata.decomposition(char)
        if decomposition and not decomposition.startswith("<"):
            expected = unicodedata.normalize("NFD", char)
            if nfd.normalize_str(char) != expected:
                patches.append((char, expected))
    return _CharClasses(_char_class(removed), _char_class(marks), _char_class(splits), tuple(patches))


@lru_cache(maxsize=8)
def _normalizer(settings: TokenizerSettings) -> normalizers.Normalizer:
    classes = _char_classes()
    steps: list[normalizers.Normalizer] = [
        normalizers.Replace(Regex(classes.removed), ""),
        # what is left to clean is whitespace (to spaces); then spaces around CJK ideographs
        normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False
        ),
    ]
    if settings.lowercase:
        # str.lower()'s Final_Sigma rule: a capital sigma after a cased letter (and case-ignorables)
        # and not before one becomes final sigma; Python's Mn marks count as case-ignorable even
        # where the newer Unicode of Oniguruma's tables made them spacing marks
        ignorable = f"(?:\\p{{Case_Ignorable}}|{classes.marks})"
        final_sigma = f"\\p{{Cased}}{ignorable}*\\KΣ(?!{ignorable}*\\p{{Cased}})"
        steps += [normalizers.Replace(Regex(final_sigma), "ς"), normalizers.Lowercase()]
    if settings.effective_strip_accents:
        steps += [normalizers.Replace(char, nfd) for char, nfd in classes.nfd_patches]
        steps += [normalizers.NFD(), normalizers.Replace(Regex(classes.marks), "")]
    return normalizers.Sequence(steps)


@lru_cache(maxsize=1)
def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Split(Regex(_char_classes().splits), behavior="isolated"),
        ]
    )


def normalize(text: str, settings: TokenizerSettings = DEFAULT_SETTINGS) -> str:
    """The normalization applied before tokenization (steps 1-4 of the module docstring)."""
    return _normalizer(settings).normalize_str(text)


def basic_tokenize(text: str, settings: TokenizerSettings = DEFAULT_SETTINGS) -> list[str]:
    """The normalized words WordPiece splits into pieces (BERT's ``BasicTokenizer.tokenize``)."""
    return [word for word, _ in _pre_tokenizer().pre_tokenize_str(normalize(text, settings))]


def build_vocab(
    texts: Iterable[str], path: str | Path, settings: TokenizerSettings = DEFAULT_SETTINGS
) -> list[str]:
    """Write a char-level vocab covering ``texts`` (read with ``settings``) to ``path`` and return
    its tokens.

    Every character of the normalized words becomes a token; ASCII letters and digits also get a
    ``##`` form so that words split into per-character WordPiece pieces.
    """
    chars: set[str] = set()
    for text in texts:
        for word in basic_tokenize(text, settings):
            chars.update(word)
    cont = {"##" + c for c in chars if c.isascii() and c.isalnum()}
    tokens = list(SPECIAL_TOKENS) + sorted(chars) + sorted(cont)
    Path(path).write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return tokens


def read_vocab(path: str | Path) -> dict[str, int]:
    """Read ``vocab.txt`` into a token -> id mapping."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return {tok: i for i, tok in enumerate(lines)}


class IETokenizer:
    """HF ``tokenizers`` WordPiece over a ``vocab.txt``, reading text as ``settings`` say (module
    docstring), producing :class:`Encoded` rows."""

    def __init__(self, vocab: dict[str, int], settings: TokenizerSettings = DEFAULT_SETTINGS):
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"vocab lacks special tokens {missing}")
        self.vocab = vocab
        self.settings = settings
        self.pad_id, self.unk_id = vocab[PAD], vocab[UNK]
        self.cls_id, self.sep_id = vocab[CLS], vocab[SEP]
        tok = Tokenizer(WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD))
        tok.normalizer = _normalizer(settings)
        tok.pre_tokenizer = _pre_tokenizer()
        self._tok = tok

    @classmethod
    def from_file(cls, path: str | Path, settings: TokenizerSettings = DEFAULT_SETTINGS) -> IETokenizer:
        """Load from a ``vocab.txt``."""
        return cls(read_vocab(path), settings)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _pieces(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        encs = self._tok.encode_batch(texts, add_special_tokens=False)
        return [(e.ids, e.offsets) for e in encs]

    def encode_batch(
        self, texts: list[str], prompts: list[str] | None = None, max_len: int = 512
    ) -> list[Encoded]:
        """Encode texts (with their prompts, for UIE) into rows of at most ``max_len`` tokens.

        Text tokens beyond the budget are dropped (callers that must not lose text split it into
        windows first); prompts are never truncated.
        """
        text_pieces = self._pieces(texts)
        prompt_pieces = self._pieces(prompts) if prompts is not None else [None] * len(texts)
        rows = []
        for (t_ids, t_offs), pp in zip(text_pieces, prompt_pieces, strict=True):
            if pp is None:
                budget = max(max_len - 2, 0)
                ids = [self.cls_id, *t_ids[:budget], self.sep_id]
                types = [0] * len(ids)
                offs = [(0, 0), *t_offs[:budget], (0, 0)]
                text_start = 1
            else:
                p_ids, p_offs = pp
                budget = max(max_len - len(p_ids) - 3, 0)
                ids = [self.cls_id, *p_ids, self.sep_id, *t_ids[:budget], self.sep_id]
                n_text = min(len(t_ids), budget)
                types = [0] * (len(p_ids) + 2) + [1] * (n_text + 1)
                offs = [(0, 0), *p_offs, (0, 0), *t_offs[:budget], (0, 0)]
                text_start = len(p_ids) + 2
            rows.append(Encoded(tuple(ids), tuple(types), tuple(offs), text_start, len(ids) - 1))
        return rows

    def encode(self, text: str, prompt: str | None = None, max_len: int = 512) -> Encoded:
        """Encode one text (and prompt)."""
        return self.encode_batch([text], None if prompt is None else [prompt], max_len)[0]

    def count_tokens(self, text: str) -> int:
        """Number of WordPiece tokens of ``text`` without special tokens."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)
