"""The cross-modal branch's captions in other scripts: CLIP's byte-level BPE encodes any UTF-8 string, so characters
CLIP's vocabulary never saw as whole tokens become byte tokens, never unknown ones; CJK characters take 2-3 tokens
each, so a caption is cut at ``context_length`` (16 in the original) sooner than a Latin one."""

import pytest
import torch
from hydra.utils import instantiate
from open_clip.tokenizer import SimpleTokenizer

from strhub.models.clip import BpeTokenizer

SOT, EOT = 49406, 49407
WORDS = ['καφές', 'ΟΔΟΣ', 'москва', 'Tiếng Việt', '北京欢迎你', '東京タワー', '서울특별시', 'scene']


def body(row: torch.Tensor) -> list:
    ids = row.tolist()
    assert ids[0] == SOT
    end = ids.index(EOT)
    assert all(i == 0 for i in ids[end + 1 :])  # zero padding after EOT
    return ids[1:end]


@pytest.mark.parametrize('word', WORDS)
def test_bpe_round_trips_every_script(word):
    ids = body(BpeTokenizer(77)([word])[0])
    assert ids and all(0 < i < SOT for i in ids)
    assert SimpleTokenizer().decode(ids).strip() == word.lower()  # CLIP's cleaning lower-cases, as for Latin text


def test_cjk_captions_are_cut_at_the_context_length():
    word = '日本語のテキストを長く書いてみる'  # 16 characters, 26 BPE tokens
    full = body(BpeTokenizer(77)([word])[0])
    assert len(full) > len(word) and len(full) > 14
    row = BpeTokenizer(16)([word])[0]
    assert row.shape == (16,) and row[0] == SOT and row[-1] == EOT  # truncated, last token overwritten by EOT
    assert row[1:-1].tolist() == full[:14]


def test_model_captions_in_a_new_script(compose_config):
    """A model with Greek and Cyrillic in its charset builds captions of them and runs the cross-modal branch."""
    greek = 'αβγδεζηθικλμνξοπρστυφχψω'
    cyrillic = 'абвгдежзийклмнопрстуфхцчшщъыьэюя'
    charset = '0123456789abcdefghijklmnopqrstuvwxyz' + greek + cyrillic
    cfg = compose_config(
        ['+experiment=clip4str-tiny', f"model.charset_train='{charset}'", f"model.charset_test='{charset}'"]
    )
    system = instantiate(cfg.model).eval()
    model = system.model
    ids = [model.tokenizer.encode(['σкот'], 'cpu')[0, 1:6]]  # σ к о т [E]
    logits = torch.full((1, 5, len(model.tokenizer) - 2), -10.0)
    for pos, tok in enumerate(ids[0].tolist()):
        logits[0, pos, tok] = 10.0
    assert model.captions(logits) == ['σкот']
    tokens = model.caption_tokens(logits)
    assert SimpleTokenizer().decode(body(tokens[0])).strip() == 'σкот'
    with torch.no_grad():
        out = system(torch.rand(2, 3, *cfg.model.img_size))
    assert out.shape[0] == 2 and out.shape[-1] == len(charset) + 1
