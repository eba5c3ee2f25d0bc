"""Tokenizer and CharsetAdapter (spec §2.1, §2.2)."""

import string

import pytest
import torch

from strhub.data.charsets import charset, charset_from_spec
from strhub.data.utils import CHARSETS, CharsetAdapter, Tokenizer


def one_hot(tokenizer: Tokenizer, rows, num_classes=None) -> torch.Tensor:
    """(N, L) token ids -> (N, L, C) probabilities, 0.9 on the given id."""
    num_classes = num_classes or len(tokenizer) - 2
    ids = torch.as_tensor(rows)
    probs = torch.full((*ids.shape, num_classes), 0.1 / (num_classes - 1))
    probs.scatter_(-1, ids.unsqueeze(-1), 0.9)
    return probs


@pytest.mark.parametrize('name, size', [('36_lowercase', 36), ('62_mixed-case', 62), ('94_full', 94)])
def test_tokenizer_ids(name, size):
    charset = CHARSETS[name]
    tok = Tokenizer(charset)
    assert len(charset) == size and len(tok) == size + 3
    assert (tok.eos_id, tok.bos_id, tok.pad_id) == (0, size + 1, size + 2)
    assert tok.charset == charset
    assert tok.ids_to_str(range(1, size + 1)) == charset
    assert tok.ids_to_str([0, size + 1, size + 2]) == '[E][B][P]'


def test_charsets_order():
    assert CHARSETS['94_full'] == string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation


def test_encode_layout():
    tok = Tokenizer(CHARSETS['36_lowercase'])
    out = tok.encode(['ab', '0'])
    assert out.dtype == torch.long and out.shape == (2, 4)  # (N, Lmax + 2)
    b, e, p = tok.bos_id, tok.eos_id, tok.pad_id
    assert out.tolist() == [[b, 11, 12, e], [b, 1, e, p]]
    with pytest.raises(ValueError, match="'A'"):
        tok.encode(['A'])


@pytest.mark.parametrize('name', list(CHARSETS))
def test_encode_decode_round_trip(name):
    tok = Tokenizer(CHARSETS[name])
    labels = ['hello', '42', CHARSETS[name][-5:], 'a']
    ids = tok.encode(labels)[:, 1:]  # targets: chars, [E], then [P] (never predicted; map to [E] for the test)
    ids[ids == tok.pad_id] = tok.eos_id
    strings, probs = tok.decode(one_hot(tok, ids))
    assert strings == labels
    for label, p in zip(labels, probs):
        assert p.shape == (len(label) + 1,)  # characters and the [E] position
        torch.testing.assert_close(p, torch.full_like(p, 0.9))


def test_decode_without_eos_keeps_everything():
    tok = Tokenizer(CHARSETS['36_lowercase'])
    strings, probs = tok.decode(one_hot(tok, [[11, 12, 13]]))
    assert strings == ['abc'] and probs[0].shape == (3,)


def test_decode_cuts_at_first_eos():
    tok = Tokenizer(CHARSETS['36_lowercase'])
    strings, probs = tok.decode(one_hot(tok, [[11, 0, 12, 0]]))
    assert strings == ['a'] and probs[0].shape == (2,)


def test_decode_fast_cuts_at_substring_and_adapts():
    tok = Tokenizer(CHARSETS['94_full'])
    ids = lambda s: [tok._stoi[c] for c in s]  # noqa: E731 (a one-line helper)
    # Literal '[', 'E', ']' predictions end the text like the [E] token (spec §2.1 quirk).
    rows = [ids('Ab-c') + [tok.eos_id] + ids('zzz'), ids('ab[E]cd') + [tok.eos_id]]
    dists = one_hot(tok, rows)
    assert tok.decode_fast(dists) == ['Ab-c', 'ab']
    assert tok.decode_fast(dists, CharsetAdapter(CHARSETS['36_lowercase'])) == ['abc', 'ab']
    assert tok.decode(dists)[0] == ['Ab-c', 'ab[E]cd']  # decode() searches the id, not the substring


def test_tokenizer_rejects_repeated_chars():
    with pytest.raises(ValueError):
        Tokenizer('abca')


def test_charset_adapter_lowercase_only():
    adapter = CharsetAdapter(CHARSETS['36_lowercase'])
    assert adapter.lowercase_only and not adapter.uppercase_only
    assert adapter('HeLLo, World!') == 'helloworld'


def test_charset_adapter_mixed_case():
    adapter = CharsetAdapter(CHARSETS['62_mixed-case'])
    assert not adapter.lowercase_only and not adapter.uppercase_only
    assert adapter('HeLLo, Wörld!') == 'HeLLoWrld'


def test_charset_adapter_uppercase_only():
    adapter = CharsetAdapter(string.digits + string.ascii_uppercase)
    assert adapter.uppercase_only and not adapter.lowercase_only
    assert adapter('abc-9') == 'ABC9'


def test_charset_adapter_digits_only_counts_as_lowercase():
    adapter = CharsetAdapter(string.digits)
    assert adapter.lowercase_only and adapter.uppercase_only  # lowercase_only is checked first
    assert adapter('A1b2') == '12'


def test_charset_adapter_regex_special_characters():
    adapter = CharsetAdapter(CHARSETS['94_full'])
    text = r'a]b^c-d\e[f' + ' é'
    assert adapter(text) == r'a]b^c-d\e[f'  # punctuation kept (escaped in the class), space and é removed
    assert CharsetAdapter('a-c')('abc-') == 'ac-'  # '-' is literal, not a range


def test_charset_from_a_file(tmp_path, compose_config):
    """``${charset:FILE}`` in a config or on the command line; the tools' CHARSET arguments take names, files or
    the characters; decomposed characters are composed (NFC) as labels are."""
    path = tmp_path / 'greek.txt'
    path.write_text('\ufeff0123\nαβγ\nε\u0301\n', encoding='utf-8')  # a byte-order mark, é as e + combining acute
    assert charset(str(path)) == charset_from_spec(str(path)) == '0123αβγέ'
    config = compose_config(['+experiment=clip4str-tiny', f'model.charset_train=${{charset:{path}}}'])
    assert config.model.charset_train == '0123αβγέ'
    assert charset_from_spec('36_lowercase') == CHARSETS['36_lowercase']
    assert charset_from_spec('xyzε\u0301') == 'xyzέ'
    (tmp_path / 'repeats.txt').write_text('abca')
    with pytest.raises(ValueError, match=r"repeats\.txt repeats 'a' \(U\+0061\)"):
        charset(str(tmp_path / 'repeats.txt'))
    with pytest.raises(ValueError, match="unknown charset 'nope': neither a name"):
        charset('nope')
    with pytest.raises(ValueError, match='is empty'):
        charset_from_spec('')
