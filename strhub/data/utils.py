"""Charsets (defined in ``charsets.py``), the STR tokenizer and the charset adapter (PARSeq/CLIP4STR conventions)."""

import re
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

# Re-exported, and importing it registers the ${charset:NAME} config resolver for everything that uses the models.
from .charsets import CHARSETS

__all__ = ['CHARSETS', 'CharsetAdapter', 'Tokenizer']


class CharsetAdapter:
    """Maps a label onto a target charset: case folding, then removal of unsupported characters.

    A charset equal to its lower-case form (this includes digits-only charsets) lower-cases labels;
    otherwise one equal to its upper-case form upper-cases them.
    """

    def __init__(self, target_charset: str) -> None:
        self.charset = target_charset
        self.lowercase_only = target_charset == target_charset.lower()
        self.uppercase_only = target_charset == target_charset.upper()
        self.unsupported = re.compile(f'[^{re.escape(target_charset)}]')

    def fold_case(self, label: str) -> str:
        if self.lowercase_only:
            return label.lower()
        if self.uppercase_only:
            return label.upper()
        return label

    def __call__(self, label: str) -> str:
        return self.unsupported.sub('', self.fold_case(label))


class Tokenizer:
    """Token ids: ``[E]`` = 0, the characters of ``charset`` in order, then ``[B]``, ``[P]``.

    The model heads predict ``len(tokenizer) - 2`` classes (``[E]`` and the characters).
    """

    EOS, BOS, PAD = '[E]', '[B]', '[P]'

    def __init__(self, charset: str) -> None:
        if len(set(charset)) != len(charset):
            raise ValueError(f'charset has repeated characters: {charset!r}')
        self._itos = (self.EOS,) + tuple(charset) + (self.BOS, self.PAD)
        self._stoi = {s: i for i, s in enumerate(self._itos)}
        self.eos_id, self.bos_id, self.pad_id = [self._stoi[s] for s in (self.EOS, self.BOS, self.PAD)]

    def __len__(self) -> int:
        return len(self._itos)

    @property
    def charset(self) -> str:
        return ''.join(self._itos[1:-2])

    @property
    def tokens(self) -> Tuple[str, ...]:
        """Every token by id: ``[E]``, the characters, ``[B]``, ``[P]``."""
        return self._itos

    def ids_to_str(self, ids: Sequence[int]) -> str:
        return ''.join(self._itos[i] for i in ids)

    def encode(self, labels: Sequence[str], device: Optional[torch.device] = None) -> Tensor:
        """Labels to ``[B] chars [E]`` rows right-padded with ``[P]``: (N, Lmax + 2) int64."""
        try:
            rows = [[self.bos_id] + [self._stoi[c] for c in y] + [self.eos_id] for y in labels]
        except KeyError as e:
            raise ValueError(f'character {e.args[0]!r} is not in the tokenizer charset') from None
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out.to(device) if device is not None else out

    def decode(self, token_dists: Tensor) -> Tuple[List[str], List[Tensor]]:
        """Greedy decoding of (N, L, C) probabilities.

        Returns:
            The strings (characters before the first ``[E]``) and, per sample, the 1-D tensor of
            max probabilities up to and including the ``[E]`` position (everything if no ``[E]``).
            The product of those probabilities is the word confidence.
        """
        probs, ids = token_dists.max(-1)
        strings, kept = [], []
        for p, i in zip(probs, ids.tolist()):
            try:
                eos = i.index(self.eos_id)
            except ValueError:
                eos = len(i)
            strings.append(self.ids_to_str(i[:eos]))
            kept.append(p[: eos + 1])
        return strings, kept

    def decode_fast(self, token_dists: Tensor, charset_adapter: Optional[CharsetAdapter] = None) -> List[str]:
        """Captions for the cross-modal branch.

        Faithful to the original: the joined token string is cut at the first *substring* ``[E]``
        (so predicted ``[``, ``E``, ``]`` in a row also end it), then adapted to the test charset.
        """
        ids = token_dists.argmax(-1).tolist()
        texts = [self.ids_to_str(i).partition(self.EOS)[0] for i in ids]
        return [charset_adapter(t) for t in texts] if charset_adapter is not None else texts
