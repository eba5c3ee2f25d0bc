"""Training: the loss falls, train.py runs end to end, resumes exactly, and round-trips checkpoints."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra.utils import instantiate

from helpers import REPO, SMALL_MODEL

from strhub.models import load_from_checkpoint
from strhub.models.parseq import gen_tgt_perms

TINY = [
    *SMALL_MODEL,
    'model.batch_size=16',
    'data.num_workers=0',
    'trainer.log_every_n_steps=1',
    'trainer.num_sanity_val_steps=0',
]


def test_loss_falls_on_rendered_words(synthetic_root, compose_config):
    torch.manual_seed(0)
    config = compose_config(TINY + [f'data.root_dir={synthetic_root}'])
    model = instantiate(config.model)
    data = instantiate(config.data)
    images, labels = next(iter(data.train_dataloader()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        perms = gen_tgt_perms(max(map(len, labels)), 6, True, True, *model.permutation_rngs(0))
        loss = model.training_loss(images, labels, perms)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses), losses


def train_command(run_dir, *overrides, output_root=None):
    """tools/train.py with the tiny config; ``run_dir`` None: Hydra's own folder under ``output_root``."""
    cmd = [sys.executable, str(REPO / 'tools' / 'train.py'), *TINY, *overrides]
    cmd += [f'hydra.run.dir={run_dir}'] if run_dir else []
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore'}
    if output_root:
        env['STR_OUTPUT_ROOT'] = str(output_root)
    return cmd, env


def run_train(run_dir, *overrides, check=True, output_root=None):
    cmd, env = train_command(run_dir, *overrides, output_root=output_root)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def start_train(run_dir, *overrides, log, wrapper=()):
    """Starts tools/train.py (through ``wrapper``, a ``python -c`` program that runs it) with its output in ``log``."""
    cmd, env = train_command(run_dir, *overrides)
    # SIGINT back to its default in the child: a pytest started in the background (nohup, CI runners) passes it on
    # ignored, and Python only turns Ctrl-C into KeyboardInterrupt when it was not ignored.
    return subprocess.Popen(
        [cmd[0], *wrapper, *cmd[1:]],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_checkpoint(proc, ckpt, min_step):
    """The step of ``ckpt`` once a complete one of step >= ``min_step`` is there (the run still going)."""
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            step = torch.load(ckpt, weights_only=False)['global_step']
            if step >= min_step:
                return step
        except Exception:  # noqa: BLE001 - not written yet
            pass
        time.sleep(0.05)
    raise AssertionError(f'the run ended (rc {proc.poll()}) before {ckpt} reached step {min_step}')


def interrupt_after_checkpoint(run_dir, *overrides, min_step=1, sig=signal.SIGINT):
    """Starts a run and stops it with ``sig`` (Ctrl-C) once last.ckpt of step >= ``min_step`` is completely written;
    returns that checkpoint, the step it had then, the run's output and its exit status."""
    ckpt, log = run_dir / 'checkpoints' / 'last.ckpt', run_dir.with_name(run_dir.name + '.log')
    with open(log, 'w') as out:
        proc = start_train(run_dir, *overrides, log=out)
        try:
            step = wait_for_checkpoint(proc, ckpt, min_step)
            proc.send_signal(sig)
            proc.wait(timeout=120)
        finally:
            proc.kill()
    return ckpt, step, log.read_text(), proc.returncode


# The run the interruption tests stop and resume: validation (and last.ckpt) every 4 steps; enough steps (over several
# epochs, curriculum ones included) that a signal lands before the end even on a fast machine.
INTERRUPTED = ('trainer.max_steps=60', 'trainer.max_epochs=10', 'trainer.val_check_interval=4')


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, synthetic_root):
    """The last checkpoint of that run, never interrupted."""
    run = tmp_path_factory.mktemp('uninterrupted')
    run_train(run, f'data.root_dir={synthetic_root}', *INTERRUPTED)
    return torch.load(run / 'checkpoints' / 'last.ckpt', weights_only=False)


def assert_same_weights(ckpt, reference):
    assert ckpt['global_step'] == reference['global_step']
    for k, v in reference['state_dict'].items():
        torch.testing.assert_close(ckpt['state_dict'][k], v, msg=k)


def test_interrupted_run_resumes_exactly_and_checkpoint_round_trips(
    tmp_path, synthetic_root, compose_config, uninterrupted
):
    args = (f'data.root_dir={synthetic_root}', *INTERRUPTED)
    # The run stopped with Ctrl-C after its second validation. The tiny model's accuracy does not improve by then, so
    # this also checks that last.ckpt follows every validation, not only new best ones.
    ckpt, validated, output, status = interrupt_after_checkpoint(tmp_path / 'half', *args, min_step=8)
    assert status == 130, output[-2000:]  # as a process interrupted by SIGINT: a script (`set -e`) stops there
    # Ctrl-C saved last.ckpt at the end of the step it came in: the steps since that validation are kept.
    step = torch.load(ckpt, weights_only=False)['global_step']
    assert validated >= 8 and validated < step < 60, (validated, step)
    assert f'interrupted at step {step}: saved {ckpt}' in output, output[-2000:]
    assert not list(ckpt.parent.glob('.*.tmp-*'))
    # Resumed from it, with no hydra.run.dir: it continues in the run the checkpoint belongs to, and ends exactly as
    # the uninterrupted run. Hydra's folder for this launch keeps only its config and log.
    launches = tmp_path / 'launches'
    proc = run_train(None, *args, f'ckpt_path={ckpt}', output_root=launches)
    assert f'run directory: {tmp_path / "half"} (the run ckpt_path belongs to' in proc.stdout, proc.stdout[-2000:]
    (launch,) = launches.iterdir()
    assert sorted(p.name for p in launch.iterdir()) == ['config', 'train.log']
    resumed = torch.load(ckpt, weights_only=False)
    assert_same_weights(resumed, uninterrupted)
    assert resumed['global_step'] == 60

    # Our checkpoint reloads, without its config, into a model with the same outputs.
    model = load_from_checkpoint(ckpt)
    assert model.hparams.clip_arch['vision_width'] == 64 and not model.training
    images = torch.randn(2, 3, 32, 128)
    trained = instantiate(compose_config(TINY + [args[0]]).model)
    trained.load_state_dict(resumed['state_dict'])
    trained.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), trained(images))

    # Resuming with another schedule length is refused up front, naming the cause.
    proc = run_train(tmp_path / 'other', *args, 'trainer.max_steps=80', f'ckpt_path={ckpt}', check=False)
    assert proc.returncode == 2 and 'schedule spans 60 optimizer steps, this configuration 80' in proc.stderr, (
        proc.stderr[-2000:]
    )
    assert 'Traceback' not in proc.stderr


def test_stop_at_step_keeps_the_schedule_and_resumes_exactly(tmp_path, synthetic_root):
    # stop_at_step takes a snapshot of a longer schedule (the tiny model's stage 1) without training the rest: the run
    # ends at that step with status 0, its learning-rate schedule planned for max_steps, and, resumed without the stop,
    # ends exactly as the run that never stopped.
    args = (f'data.root_dir={synthetic_root}', 'trainer.max_steps=14', 'trainer.val_check_interval=4')
    run_train(tmp_path / 'full', *args)
    reference = torch.load(tmp_path / 'full' / 'checkpoints' / 'last.ckpt', weights_only=False)
    proc = run_train(tmp_path / 'stop', *args, 'stop_at_step=6', 'checkpoint_every_n_steps=3')
    ckpt = tmp_path / 'stop' / 'checkpoints' / 'last.ckpt'
    assert f'stop_at_step: stopped at step 6, saved {ckpt}' in proc.stdout, proc.stdout[-2000:]
    stopped = torch.load(ckpt, weights_only=False)
    assert stopped['global_step'] == 6 and stopped['lr_schedulers'][0]['total_steps'] == 14
    assert sorted(p.name for p in (ckpt.parent / 'steps').iterdir()) == ['step=3.ckpt', 'step=6.ckpt']
    # The same command again (a script re-run) trains nothing more.
    proc = run_train(tmp_path / 'stop', *args, 'stop_at_step=6', f'ckpt_path={ckpt}')
    assert 'stop_at_step=6: the run is at step 6 already' in proc.stdout, proc.stdout[-2000:]
    assert torch.load(ckpt, weights_only=False)['global_step'] == 6
    run_train(tmp_path / 'stop', *args, f'ckpt_path={ckpt}')
    assert_same_weights(torch.load(ckpt, weights_only=False), reference)


def test_sigterm_saves_its_step_and_ends_with_a_failing_status(tmp_path, synthetic_root, uninterrupted):
    # SIGTERM (kill, a scheduler's time limit): Lightning stops at the end of a step, and used to exit with status 0
    # (a training script went on to its next stage with the half-trained model) and to save nothing there. 143: ended
    # by SIGTERM, with last.ckpt saved at that step, unless the signal came during a validation (then Lightning stops
    # at once and the last checkpoint is the one before).
    args = (f'data.root_dir={synthetic_root}', *INTERRUPTED)
    ckpt, validated, output, status = interrupt_after_checkpoint(
        tmp_path / 'run', *args, min_step=8, sig=signal.SIGTERM
    )
    assert status == 128 + signal.SIGTERM, output[-2000:]
    step = torch.load(ckpt, weights_only=False)['global_step']
    saved_there = f'saved {ckpt} there: resume with ckpt_path={ckpt}'
    assert (saved_there in output and validated < step < 60) or (
        f'resume from the last checkpoint: ckpt_path={ckpt}' in output
    ), output[-2000:]
    assert 'stopped by SIGTERM at step' in output, output[-2000:]
    run_train(tmp_path / 'run', *args, f'ckpt_path={ckpt}')
    assert_same_weights(torch.load(ckpt, weights_only=False), uninterrupted)


def test_fails_fast_on_missing_paths(tmp_path, synthetic_root):
    proc = run_train(tmp_path, f'data.root_dir={tmp_path / "nowhere"}', check=False)
    assert proc.returncode == 2 and 'data.root_dir does not exist' in proc.stderr and 'Traceback' not in proc.stderr
    proc = run_train(
        tmp_path, f'data.root_dir={synthetic_root}', 'model.clip_pretrained=missing/ViT-B-16.pt', check=False
    )
    assert proc.returncode == 2 and 'model.clip_pretrained file not found: missing/ViT-B-16.pt' in proc.stderr


def test_help_shows_examples_and_the_config():
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools/train.py'), '--help'], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith('tools/train.py: train CLIP4STR')
    for shown in (
        '$CLIP_ROOT/ViT-B-16.pt',
        'trainer.accumulate_grad_batches=2',
        "ckpt_path='outputs/RUN",
        'pretrained=',
    ):
        assert shown in out, shown
    assert 'experiment: clip4str-b16, clip4str-b32, clip4str-h14, clip4str-l14, clip4str-tiny' in out
    assert '\nmodel:\n  _convert_: all\n' in out  # the config itself


@pytest.mark.parametrize(
    'experiment', ['clip4str-b16', 'clip4str-b32', 'clip4str-l14', 'clip4str-h14', 'clip4str-tiny']
)
def test_variant_configs_build_at_tiny_widths(experiment, compose_config):
    """Each variant's config builds through the one code path; widths shrunk so the test stays small."""
    config = compose_config([f'+experiment={experiment}', 'model.clip_pretrained=null'])
    arch = config.model.clip_arch
    scale = {
        'clip_arch.vision_width': 64,
        'clip_arch.text_width': 64,
        'clip_arch.embed_dim': 32,
        'clip_arch.vision_layers': 1,
        'clip_arch.text_layers': 1,
    }
    config = compose_config(
        [f'+experiment={experiment}', 'model.clip_pretrained=null'] + [f'model.{k}={v}' for k, v in scale.items()]
    )
    model = instantiate(config.model).eval()
    h, w = config.model.img_size
    grid = (h // arch.patch_size[0]) * (w // arch.patch_size[1])
    images = torch.randn(2, 3, h, w)
    with torch.no_grad():
        assert model.model.encode(images).shape == (2, grid + 1, 32)
        logits = model(images, max_length=3)
    assert logits.shape == (2, 4, len(config.model.charset_train) + 1)
    assert list(config.model.img_size) == list(arch.image_size)
