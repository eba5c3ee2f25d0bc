"""The CLIP4STR network (paper Fig. 2): CLIP image encoder -> visual decoder -> CLIP text encoder ->
cross-modal decoder. A plain ``nn.Module``; training logic lives in ``system.py``.

Inference runs in stages with tensor interfaces (:meth:`CLIP4STR.forward_branches` chains them):

1. :meth:`~CLIP4STR.encode`: images -> image tokens (the memory of both decoders);
2. :meth:`~CLIP4STR.decode_visual`: memory -> visual logits;
3. :meth:`~CLIP4STR.caption_tokens`: visual logits -> CLIP token ids of the argmax caption (the one step on the
   host: string decoding and BPE);
4. :meth:`~CLIP4STR.cross_memory` and :meth:`~CLIP4STR.decode_cross`: memory + token ids -> cross-modal logits;
5. :meth:`~CLIP4STR.refine`: a cloze pass of a decoder over its previous prediction.

:meth:`~CLIP4STR.forward_branches` computes what the original computes at a fraction of its cost: each decoder's
keys/values of the memory once per memory (the image tokens projected once for the cross-modal decoder, the text
tokens again only for captions that changed), the text encoder only for captions that refinement changed, and
autoregressive steps at the cost of one position (:meth:`~strhub.models.parseq.Decoder.step`). The original's
computation is :func:`strhub.models.clip4str.reference.forward_branches`.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from strhub.data.utils import CharsetAdapter, Tokenizer
from strhub.models.clip import BpeTokenizer, encode_image, encode_image_keeping, encode_text
from strhub.models.parseq import KV, ContextCache, Decoder, cloze_mask


class CLIP4STR(nn.Module):
    """CLIP4STR: a visual branch and a cross-modal branch on top of one CLIP.

    State-dict names equal the released checkpoints: ``clip_model.*`` (OpenAI CLIP keys),
    ``visual_decoder.*`` and ``cross_decoder.*``.

    Args:
        clip_model: an open_clip ``CLIP`` (see ``strhub.models.clip``); decoder width = its embed dim.
        charset_train: characters the heads predict (``len + 1`` classes with ``[E]``).
        charset_test: charset the visual prediction is adapted to before it becomes a caption.
        max_label_length: longest label; ``max_label_length + 1`` decoding steps.
        context_length: CLIP text positions used for captions (16 in the original).
        decode_ar: autoregressive (True) or single-pass (False) decoding.
        refine_iters: cloze refinement iterations after decoding.
        use_language_model: build the cross-modal branch (False: PARSeq-like visual-only model).
        image_detach: stop the cross-modal loss at the image tokens.
        adapter: the STR-Adapter variant's adapter between the image encoder and the decoders
            (:mod:`strhub.models.clip4str.adapters`), or None.
    """

    def __init__(
        self,
        clip_model: nn.Module,
        charset_train: str,
        charset_test: str,
        max_label_length: int,
        context_length: int,
        dec_num_heads: int,
        dec_mlp_ratio: int,
        dec_depth: int,
        dropout: float,
        decode_ar: bool,
        refine_iters: int,
        use_language_model: bool = True,
        image_detach: bool = True,
        adapter: Optional[nn.Module] = None,
    ):
        super().__init__()
        self.clip_model = clip_model
        self.adapter = adapter
        self.tokenizer = Tokenizer(charset_train)
        self.charset_test = charset_test
        self.max_label_length = max_label_length
        self.decode_ar = decode_ar
        self.refine_iters = refine_iters
        self.image_detach = image_detach
        self.bpe = BpeTokenizer(context_length)
        width = clip_model.text_projection.shape[1]

        def decoder() -> Decoder:
            return Decoder(
                width,
                dec_num_heads,
                dec_mlp_ratio,
                dec_depth,
                dropout,
                num_tokens=len(self.tokenizer),
                num_classes=len(self.tokenizer) - 2,
                max_len=max_label_length + 1,
            )

        self.visual_decoder = decoder()
        self.cross_decoder = decoder() if use_language_model else None

    @property
    def charset_test(self) -> str:
        return self.charset_adapter.charset

    @charset_test.setter
    def charset_test(self, charset: str) -> None:
        # The test charset also shapes the captions fed to the text encoder, as in the original.
        self.charset_adapter = CharsetAdapter(charset)

    @property
    def device(self) -> torch.device:
        return self.visual_decoder.pos_queries.device

    def encode(self, images: Tensor) -> Tensor:
        """Stage 1, image tokens: (N, 3, H, W) -> (N, 1 + G, D), through the adapter if there is one."""
        if self.adapter is None:
            return encode_image(self.clip_model, images)
        memory, block_inputs = encode_image_keeping(self.clip_model, images, self.adapter.block_ids)
        return self.adapter(memory, block_inputs)

    def decode_visual(self, memory: Tensor, num_steps: int, stop_early: bool) -> Tensor:
        """Stage 2, visual logits (N, L, C) with L <= ``num_steps`` (fewer after an early stop)."""
        return self.decode(self.visual_decoder, self.visual_decoder.memory_kv(memory), num_steps, stop_early)

    def captions(self, visual_logits: Tensor) -> List[str]:
        """Greedy strings of the visual prediction, adapted to the test charset."""
        probs = visual_logits.detach().float().softmax(-1)
        return self.tokenizer.decode_fast(probs, charset_adapter=self.charset_adapter)

    def caption_tokens(self, visual_logits: Tensor) -> Tensor:
        """Stage 3, CLIP token ids (N, context_length) of :meth:`captions`, on the logits' device."""
        return self.bpe(self.captions(visual_logits)).to(visual_logits.device)

    def encode_caption(self, caption_tokens: Tensor) -> Tensor:
        """CLIP text features of every caption token: (N, context_length) -> (N, context_length, D)."""
        return encode_text(self.clip_model, caption_tokens)

    def cross_image(self, memory: Tensor) -> Tensor:
        """The image part of the cross-modal memory (detached with ``image_detach``)."""
        return memory.detach() if self.image_detach else memory

    def cross_memory(self, memory: Tensor, caption_tokens: Tensor) -> Tensor:
        """Stage 4a, memory of the cross-modal decoder: [image tokens ; CLIP text features of the caption].

        Args:
            memory: (N, S, D) image tokens.
            caption_tokens: (N, context_length) CLIP token ids (:meth:`caption_tokens`).

        Returns:
            (N, S + context_length, D)
        """
        image = self.cross_image(memory)
        text = self.encode_caption(caption_tokens.to(memory.device))
        return torch.cat([image, text.to(image.dtype)], dim=1)

    def decode_cross(self, cross_memory: Tensor, num_steps: int) -> Tensor:
        """Stage 4b, cross-modal logits (N, num_steps, C); no early stop (the visual branch fixed the length)."""
        return self.decode(self.cross_decoder, self.cross_decoder.memory_kv(cross_memory), num_steps, False)

    def decode(self, decoder: Decoder, memory: List[KV], num_steps: int, stop_early: bool) -> Tensor:
        """Decodes with ``decoder`` over memory keys/values (:meth:`Decoder.memory_kv`), AR or NAR as configured."""
        if not self.decode_ar:  # all positions in one pass from [B] alone
            n = memory[0][0].shape[0]
            bos = torch.full((n, 1), self.tokenizer.bos_id, dtype=torch.long, device=self.device)
            return decoder(bos, memory, decoder.pos_queries[:, :num_steps].expand(n, -1, -1))[0]
        return self._ar_decode(decoder, memory, num_steps, stop_early)

    def _ar_decode(self, decoder: Decoder, memory: List[KV], num_steps: int, stop_early: bool) -> Tensor:
        """Greedy autoregressive decoding; ``stop_early`` stops once every row has emitted ``[E]``."""
        n = memory[0][0].shape[0]
        token = torch.full((n, 1), self.tokenizer.bos_id, dtype=torch.long, device=self.device)
        ended = torch.zeros(n, dtype=torch.bool, device=self.device)
        cache = ContextCache(num_steps)
        logits = []
        for i in range(num_steps):
            step_logits = decoder.step(i, token, memory, cache)
            logits.append(step_logits)
            if i + 1 < num_steps:
                token = step_logits.argmax(-1)
                if stop_early:
                    ended |= token[:, 0] == self.tokenizer.eos_id
                    if ended.all():
                        break
        return torch.cat(logits, dim=1)

    def refine(self, decoder: Decoder, logits: Tensor, memory: List[KV], num_steps: int) -> Tensor:
        """Stage 5, one cloze pass: every position re-predicted from all the others (previous argmax as context).

        Args:
            memory: the decoder's keys/values of its memory (:meth:`Decoder.memory_kv`).
        """
        n = logits.shape[0]
        bos = torch.full((n, 1), self.tokenizer.bos_id, dtype=torch.long, device=logits.device)
        tgt_in = torch.cat([bos, logits[:, :-1].argmax(-1)], dim=1)
        length = tgt_in.shape[1]
        # The first [E] and everything after it are hidden from the context.
        padding = (tgt_in == self.tokenizer.eos_id).int().cumsum(-1) > 0
        # The original aliases its content and query masks, so the content mask is the cloze mask too
        # (only read when dec_depth > 1). After an early AR stop, length < num_steps: the num_steps
        # queries then attend to the shorter context, exactly as the original.
        mask = cloze_mask(num_steps, logits.device)
        pos_queries = decoder.pos_queries[:, :num_steps].expand(n, -1, -1)
        return decoder(tgt_in, memory, pos_queries, mask[:, :length], mask[:length, :length], padding)[0]

    def forward(self, images: Tensor, max_length: Optional[int] = None) -> Tensor:
        """Recognises text.

        Args:
            images: (N, 3, H, W) normalised images.
            max_length: decode exactly ``max_length + 1`` steps (validation); None = up to
                ``max_label_length + 1`` steps with an early stop once every row has ended.

        Returns:
            Logits (N, T, C) of the cross-modal branch (of the visual branch without it).
        """
        return self.forward_branches(images, max_length)[1]

    def forward_branches(self, images: Tensor, max_length: Optional[int] = None) -> Tuple[Tensor, Tensor]:
        """Like :meth:`forward` but returns (visual logits, final logits)."""
        stop_early = max_length is None
        max_length = self.max_label_length if max_length is None else min(max_length, self.max_label_length)
        num_steps = max_length + 1
        memory = self.encode(images)
        visual_kv = self.visual_decoder.memory_kv(memory)
        visual_logits = self.decode(self.visual_decoder, visual_kv, num_steps, stop_early)
        if self.cross_decoder is None:
            for _ in range(self.refine_iters):
                visual_logits = self.refine(self.visual_decoder, visual_logits, visual_kv, num_steps)
            return visual_logits, visual_logits
        image_kv = self.cross_decoder.memory_kv(self.cross_image(memory))
        tokens = self.caption_tokens(visual_logits)
        text = self.encode_caption(tokens).to(memory.dtype)
        cross_kv = concat_kv(image_kv, self.cross_decoder.memory_kv(text))
        # The cross loop runs as many steps as the visual one did.
        cross_logits = self.decode(self.cross_decoder, cross_kv, visual_logits.shape[1], False)
        for _ in range(self.refine_iters):
            visual_logits = self.refine(self.visual_decoder, visual_logits, visual_kv, num_steps)
            new_tokens = self.caption_tokens(visual_logits)
            changed = (new_tokens != tokens).any(-1)
            if changed.any():  # only the captions that refinement changed go through the text encoder again
                text = text.clone()
                text[changed] = self.encode_caption(new_tokens[changed]).to(text.dtype)
                tokens = new_tokens
                cross_kv = concat_kv(image_kv, self.cross_decoder.memory_kv(text))
            cross_logits = self.refine(self.cross_decoder, cross_logits, cross_kv, num_steps)
        return visual_logits, cross_logits


def concat_kv(first: List[KV], second: List[KV]) -> List[KV]:
    """Per-layer keys/values of the memory [first ; second] (projections are per token, so they concatenate)."""
    return [(torch.cat([k1, k2], dim=2), torch.cat([v1, v2], dim=2)) for (k1, v1), (k2, v2) in zip(first, second)]
