"""What all scene-text recognisers share: decoding logits to strings, and the validation and test steps."""

from typing import List, Sequence, Tuple

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from strhub.evaluation.metrics import BatchResult, score_predictions


class BaseSystem(pl.LightningModule):
    """Evaluation common to all recognisers. Subclasses provide ``tokenizer``, ``charset_adapter``,
    ``forward(images, max_length=None)`` and ``training_step``."""

    def decode_logits(self, logits: Tensor) -> Tuple[List[str], List[float]]:
        """Greedy strings (full training charset) of (N, T, C) logits and their word confidences: the product
        of the per-character probabilities and the [E] one."""
        preds, probs = self.tokenizer.decode(logits.float().softmax(-1))
        return preds, [p.prod().item() for p in probs]

    def eval_batch(self, images: Tensor, labels: Sequence[str], validation: bool) -> BatchResult:
        """Scores a batch. Validation decodes exactly as many steps as the longest label (no early stop)
        and also returns the loss; predictions are adapted to the test charset before comparison."""
        if validation:
            targets = self.tokenizer.encode(labels, self.device)[:, 1:]
            logits = self.forward(images, targets.shape[1] - 1)
            loss = F.cross_entropy(
                logits.flatten(end_dim=1).float(), targets.flatten(), ignore_index=self.tokenizer.pad_id
            )
            loss_numel = int((targets != self.tokenizer.pad_id).sum())
        else:
            logits = self.forward(images)
            loss, loss_numel = torch.tensor(0.0), 0
        preds, confidences = self.decode_logits(logits)
        res = score_predictions([self.charset_adapter(p) for p in preds], confidences, labels)
        res.loss, res.loss_numel = loss.item() * loss_numel, loss_numel
        return res

    def on_validation_epoch_start(self) -> None:
        self._val_result = BatchResult()

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self._val_result += self.eval_batch(images, labels, validation=True)

    def on_validation_epoch_end(self) -> None:
        r = self._val_result
        # Exact global metrics: sum the counts over all ranks before dividing.
        sums = torch.tensor(
            [r.num_samples, r.correct, r.ned, r.loss, r.loss_numel], dtype=torch.float64, device=self.device
        )
        sums = self.trainer.strategy.reduce(sums, reduce_op='sum') if self.trainer.world_size > 1 else sums
        n, correct, ned, loss, numel = sums.tolist()
        acc = correct / max(n, 1)
        self.log('val_accuracy', 100 * acc, prog_bar=True)
        self.log('val_NED', 100 * (1 - ned / max(n, 1)), prog_bar=True)
        self.log('val_loss', loss / max(numel, 1))
        self.log('hp_metric', acc)
