"""Test-suite fixtures. Each family lives in its own module; imported here so pytest sees them."""

from fixtures_openai import *  # noqa: F401,F403  (local OpenAI-compatible server)
from fixtures_pg import *  # noqa: F401,F403  (real PostgreSQL 18 + pgvector from PyPI)
