"""Fixtures: a local OpenAI-compatible server on 127.0.0.1 (see core.testing)."""
