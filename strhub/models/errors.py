"""Errors of model loading, shared by the generic loader and the systems' own."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not describe a model of ours."""
