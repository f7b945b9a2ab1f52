"""Knowledge distillation on logits: divergences and ranking losses between teacher and student."""
