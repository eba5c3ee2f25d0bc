"""Run by test_ddp.py: a 2-process CPU (gloo) DDP fit of the tiny model; each rank writes what it ended with.

Usage: python tests/ddp_check.py OUT_DIR DATA_ROOT [RESUME_CKPT]

Without RESUME_CKPT the run also keeps a checkpoint after its third optimizer step (OUT_DIR/step=3.ckpt); with it,
the run resumes from that file.
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from pytorch_lightning.callbacks import ModelCheckpoint

from helpers import SMALL_MODEL  # the tests' folder is first on sys.path when run as a script
from strhub.models.parseq import gen_tgt_perms
from strhub.training import trainer_kwargs

REPO = Path(__file__).resolve().parents[1]


class Record(pl.Callback):
    def __init__(self, out: Path, name: str):
        self.out, self.name, self.lrs, self.perms = out, name, [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append([g['lr'] for g in trainer.optimizers[0].param_groups])
        hp = module.hparams  # the permutations training_step draws for this batch (at T = 6, from torch.randperm)
        rngs = module.permutation_rngs(batch_idx % trainer.accumulate_grad_batches)
        self.perms.append(gen_tgt_perms(6, hp.perm_num, True, True, *rngs).tolist())
        torch.rand(trainer.global_rank + 1)  # ranks consume the global RNG differently (as batch shapes make them)

    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        (self.out / f'{self.name}_rank{trainer.global_rank}.json').write_text(
            json.dumps(
                {
                    'world_size': trainer.world_size,
                    'global_step': trainer.global_step,
                    'lrs': self.lrs,
                    'perms': self.perms,
                    'torch_draws': torch.rand(4).tolist(),  # where this rank's global RNG ended
                    'param_sum': flat.double().sum().item(),
                    'param_abs_sum': flat.double().abs().sum().item(),
                    'max_lr': trainer.lr_scheduler_configs[0].scheduler.optimizer.param_groups[0]['max_lr'],
                    'model_lr': module.hparams.lr,
                    'coef_lr': module.hparams.coef_lr,
                }
            )
        )


def main(out: str, data_root: str, resume: str = '') -> None:
    overrides = [
        *SMALL_MODEL,
        'model.batch_size=4',
        'data.num_workers=0',
        f'data.root_dir={data_root}',
        'trainer.gpus=0',
        '+trainer.devices=2',
        'trainer.accumulate_grad_batches=2',
        'model.coef_lr=3.0',
        'model.perm_num=6',  # the tiny recipe's 2 are the canonical order and its mirror: nothing random
        'trainer.max_steps=12',
        'trainer.num_sanity_val_steps=0',
        '++trainer.limit_val_batches=1',
        'trainer.val_check_interval=4',
        '+trainer.logger=false',
        '+trainer.enable_progress_bar=false',
    ]
    with initialize_config_dir(config_dir=str(REPO / 'configs'), version_base='1.2'):
        config = compose('main', overrides=overrides)
    pl.seed_everything(0, workers=True)
    kw = trainer_kwargs(config)
    callbacks = [Record(Path(out), 'resumed' if resume else 'full')]
    if not resume:
        callbacks.append(ModelCheckpoint(dirpath=out, filename='{step}', every_n_train_steps=3, save_top_k=-1))
    trainer = pl.Trainer(**kw, callbacks=callbacks, enable_checkpointing=not resume)
    trainer.fit(instantiate(config.model), datamodule=instantiate(config.data), ckpt_path=resume or None)


if __name__ == '__main__':
    main(*sys.argv[1:])
