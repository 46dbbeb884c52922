"""WordPiece tokenization with character offsets, shared by training, conversion and serving.

The vocab is a BERT/ERNIE style ``vocab.txt`` (one token per line, id = line number). Chinese
characters become one token each; other words are split into WordPiece pieces. Offsets are
character offsets into the original (un-normalized) string of the segment they belong to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordPiece

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)


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


def _normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=True
    )


def normalize(text: str) -> str:
    """The normalization applied before tokenization (lowercase, spaces around CJK chars)."""
    return _normalizer().normalize_str(text)


def build_vocab(texts: Iterable[str], path: str | Path) -> list[str]:
    """Write a char-level vocab covering ``texts`` to ``path`` and return its tokens.

    Every character seen becomes a token; ASCII letters and digits also get a ``##`` form so
    that words split into per-character WordPiece pieces.
    """
    pre = pre_tokenizers.BertPreTokenizer()
    chars: set[str] = set()
    for text in texts:
        for word, _ in pre.pre_tokenize_str(normalize(text)):
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
    """HF ``tokenizers`` WordPiece over a ``vocab.txt``, producing :class:`Encoded` rows."""

    def __init__(self, vocab: dict[str, int]):
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise ValueError(f"vocab lacks special tokens {missing}")
        self.vocab = vocab
        self.pad_id, self.unk_id = vocab[PAD], vocab[UNK]
        self.cls_id, self.sep_id = vocab[CLS], vocab[SEP]
        tok = Tokenizer(WordPiece(vocab, unk_token=UNK, max_input_chars_per_word=100))
        tok.normalizer = _normalizer()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        self._tok = tok

    @classmethod
    def from_file(cls, path: str | Path) -> IETokenizer:
        """Load from a ``vocab.txt``."""
        return cls(read_vocab(path))

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
