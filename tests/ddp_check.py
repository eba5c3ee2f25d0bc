"""Run by test_ddp.py: a 2-process CPU (gloo) DDP fit of the tiny model; each rank writes what it ended with.

Usage: python tests/ddp_check.py OUT_DIR DATA_ROOT
"""

import json
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from strhub.training import trainer_kwargs

REPO = Path(__file__).resolve().parents[1]


class Record(pl.Callback):
    def __init__(self, out: Path):
        self.out, self.lrs = out, []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.lrs.append([g['lr'] for g in trainer.optimizers[0].param_groups])

    def on_train_end(self, trainer, module):
        flat = torch.cat([p.detach().flatten() for p in module.parameters()])
        (self.out / f'rank{trainer.global_rank}.json').write_text(
            json.dumps(
                {
                    'world_size': trainer.world_size,
                    'global_step': trainer.global_step,
                    'lrs': self.lrs,
                    'param_sum': flat.double().sum().item(),
                    'param_abs_sum': flat.double().abs().sum().item(),
                    'max_lr': trainer.lr_scheduler_configs[0].scheduler.optimizer.param_groups[0]['max_lr'],
                    'model_lr': module.hparams.lr,
                    'coef_lr': module.hparams.coef_lr,
                }
            )
        )


def main(out: str, data_root: str) -> None:
    overrides = [
        '+experiment=clip4str-tiny',
        'model.clip_arch.vision_layers=1',
        'model.clip_arch.text_layers=1',
        'model.clip_arch.vision_width=64',
        'model.clip_arch.text_width=64',
        'model.clip_arch.embed_dim=64',
        'model.batch_size=4',
        'data.num_workers=0',
        f'data.root_dir={data_root}',
        'trainer.gpus=0',
        '+trainer.devices=2',
        'trainer.accumulate_grad_batches=2',
        'model.coef_lr=3.0',
        'trainer.max_steps=6',
        'trainer.num_sanity_val_steps=0',
        '++trainer.limit_val_batches=1',
        'trainer.val_check_interval=4',
        '+trainer.enable_checkpointing=false',
        '+trainer.logger=false',
        '+trainer.enable_progress_bar=false',
    ]
    with initialize_config_dir(config_dir=str(REPO / 'configs'), version_base='1.2'):
        config = compose('main', overrides=overrides)
    pl.seed_everything(0, workers=True)
    kw = trainer_kwargs(config)
    trainer = pl.Trainer(**kw, callbacks=[Record(Path(out))])
    trainer.fit(instantiate(config.model), datamodule=instantiate(config.data))


if __name__ == '__main__':
    main(*sys.argv[1:])
