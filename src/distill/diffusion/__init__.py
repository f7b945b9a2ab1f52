"""Diffusion and flow models: schedules, the denoiser seam, samplers and step-distillation methods."""
