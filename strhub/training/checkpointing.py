"""Saving, interrupting and resuming training without losing what was done."""

import os
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, Checkpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from strhub.models.checkpoint import OPENAI_MEANSTD_KEY
from strhub.models.serialization import atomic_save
from .checks import TrainingSetupError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint reader and writer, with each file written beside its destination and renamed over it
    (:func:`~strhub.models.serialization.atomic_save`): a kill at any moment leaves the previous checkpoint intact.
    Lightning's own writer moves a file from the temporary folder, a copy when that is on another filesystem (usual
    on clusters), which a kill leaves truncated.

    Resuming (``ckpt_path=``) reads tensors and plain data only, unless ``trust`` (``trust_checkpoint=true``).
    """

    def __init__(self, trust: bool = False) -> None:
        self.trust = trust

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f'{type(self).__name__} takes no storage_options')
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only: Optional[bool] = None):
        weights_only = not self.trust if weights_only is None else weights_only
        return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)


@rank_zero_only
def remove_partial_checkpoints(ckpt_dir: Path) -> None:
    """Deletes the partial files of saves that were killed (``.NAME.tmp-PID``, see ``atomic_save``): the
    checkpoints beside them are complete."""
    for path in sorted(ckpt_dir.glob('**/.*.tmp-*')):
        if path.is_file() and path.name.rsplit('-', 1)[1].isdigit():
            path.unlink()
            print(f'removed the partial file of a killed save: {path}')


class RecordNormalisation(Callback):
    """Writes the training images' normalisation into every checkpoint (``data.openai_meanstd``), which exports keep
    and fine-tuning starts from (:func:`strhub.models.checkpoint.trained_with_openai_meanstd`)."""

    def __init__(self, openai_meanstd: bool) -> None:
        self.openai_meanstd = openai_meanstd

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[OPENAI_MEANSTD_KEY] = self.openai_meanstd


class StopOnInterrupt(Checkpoint):
    """Ctrl-C or SIGTERM during training: stops at the end of the current optimizer step, after writing ``last.ckpt``
    there (exactly resumable, like the validation-time one), so the steps since the last validation are kept.

    Lightning's own handling of Ctrl-C stops wherever the KeyboardInterrupt lands, mid-step, where weights, loop
    counters and data position can disagree, and saves nothing. A second Ctrl-C stops at once, without saving; an
    interrupted save leaves the previous file (atomic writes). On SIGTERM (``kill``, a scheduler's time limit) Lightning
    stops by itself right after the step, saving nothing: this saves the step first (``saved_step``), unless the signal
    came during a validation, where Lightning stops at once. A ``Checkpoint``, so that Lightning runs it after the
    ModelCheckpoints (a snapshot due at the same step is written first).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid = os.getpid()
        self._previous = None
        self._training = self._requested = False
        self._step = 0
        self.saved_step: Optional[int] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before any DataLoader worker starts: forked workers inherit the handler and leave Ctrl-C to this process.
        # Not where Ctrl-C is ignored (a job started in the background) or not Python's (an embedding application).
        if stage == 'fit' and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a DataLoader worker
            return
        signal.signal(signal.SIGINT, self._previous)  # a second Ctrl-C stops at once
        if not self._training:  # the sanity check, or set-up: nothing to save yet
            raise KeyboardInterrupt
        self._requested = True
        print('\nCtrl-C: stopping after this step, to save last.ckpt (Ctrl-C again: stop at once, unsaved)', flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if trainer.global_step == self._step:  # inside a gradient accumulation: no step to resume from
            return
        stop = self._requested or trainer.received_sigterm
        if trainer.world_size > 1:  # every rank stops at the same step (the save is collective)
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(self.path, weights_only=False)  # full state; global rank 0 writes
            self.saved_step = trainer.global_step
            if trainer.received_sigterm:  # Lightning raises SIGTERMException next (run_training reports it)
                return
            if trainer.is_global_zero:
                print(f'interrupted at step {trainer.global_step}: saved {self.path} (resume with ckpt_path=...)')
            raise KeyboardInterrupt

    def _restore(self) -> None:
        if signal.getsignal(signal.SIGINT) == self._on_sigint:  # not Lightning's SIG_IGN while it shuts down
            signal.signal(signal.SIGINT, self._previous)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()


class StopAtStep(Checkpoint):
    """``stop_at_step``: ends training after optimizer step ``step``, writing ``last.ckpt`` there (exactly resumable,
    as after Ctrl-C), the learning-rate schedule still planned for ``trainer.max_steps``: a snapshot of a longer
    schedule without the cost of the rest. Lightning validates at a requested stop, so the step's accuracy is logged
    and the best-k checkpoints see it. A ``Checkpoint``, run after the ModelCheckpoints (the step's snapshot first).
    """

    def __init__(self, step: int, path: Path) -> None:
        self.step = step
        self.path = path
        self.stopped = False

    def _stop(self, trainer: pl.Trainer, message: str) -> None:
        trainer.should_stop = self.stopped = True
        if trainer.is_global_zero:
            print(message)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step >= self.step:  # resumed from the stop, or past it
            self._stop(trainer, f'stop_at_step={self.step}: the run is at step {trainer.global_step} already')

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self.stopped and trainer.global_step >= self.step:  # first true right after that optimizer step
            trainer.save_checkpoint(self.path, weights_only=False)
            self._stop(trainer, f'stop_at_step: stopped at step {trainer.global_step}, saved {self.path}')


class ScheduleCheck(Callback):
    """Refuses to resume a run whose learning-rate schedule was planned for another number of steps.

    OneCycle's length is fixed when a run starts (from max_steps / max_epochs, batch size, devices, accumulation);
    a resumed run with other values would otherwise fail deep in the scheduler, or train on a wrong schedule.
    """

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        saved = (checkpoint.get('lr_schedulers') or [{}])[0].get('total_steps')
        planned = trainer.estimated_stepping_batches
        if saved is not None and saved != planned:
            raise TrainingSetupError(
                f"the checkpoint's learning-rate schedule spans {saved} optimizer steps, this configuration "
                f'{planned}: resume with the settings the run started with (trainer.max_steps, trainer.max_epochs, '
                'model.batch_size, trainer.gpus, trainer.accumulate_grad_batches), or start a new run from its '
                'weights with pretrained=CHECKPOINT'
            )
