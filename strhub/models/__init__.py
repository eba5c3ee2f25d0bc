"""Scene-text recognition models."""

from strhub.models.checkpoint import CheckpointError, load_from_checkpoint

__all__ = ['CheckpointError', 'load_from_checkpoint']
