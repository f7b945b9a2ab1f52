"""Language-model distillation: teacher loading, token targets, chunked vocabulary loss, methods."""
