"""Render methods: score distillation objectives, one file each."""

from distill.render.methods import prd, sds, vsd  # noqa: F401
