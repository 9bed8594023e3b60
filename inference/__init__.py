"""The AI: findings vocabulary, the torch model, model versions, reads, feedback, workers."""
