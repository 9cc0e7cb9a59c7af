"""The embedding drivers: `EmbeddingService` (threads) and `AsyncEmbeddingService` (asyncio) over the
engine's plan, and what they share (`base`). They send and wait; the engine decides."""
