"""The GPU side: model loading, the batching engine, event publishing, heartbeats."""
