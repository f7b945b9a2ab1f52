"""Score distillation into parametric renderers (family B's SDS line): an image teacher's
denoising gradient optimises a differentiable scene's parameters."""
