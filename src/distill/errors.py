"""Errors a user can act on. Every message says what was wrong, where, and how to fix it."""

from __future__ import annotations


class DistillError(Exception):
    """Base class for every error `distill` raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(DistillError):
    """A run config is invalid: unknown key, wrong type, unknown registered name, bad value."""


class DataError(DistillError):
    """A dataset or data file is not what it claims to be."""


class CheckpointError(DistillError):
    """A checkpoint or run directory cannot be used (corrupt, or made by another config)."""


class NonFiniteLossError(DistillError):
    """Training produced a NaN or infinite loss or gradient; the run stopped before saving it."""


class ModelMismatchError(DistillError):
    """Teacher, student and data disagree (dimensions, parameterisation, vocabulary...)."""
