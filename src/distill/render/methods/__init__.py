"""Render methods: score distillation objectives, one file each."""

from distill.render.methods import sds, vsd  # noqa: F401
