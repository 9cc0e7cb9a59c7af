"""``python -m core.testing.openai_server --port 0 [--config JSON] [--exit-on-stdin-eof]``."""

from core.testing.openai_server.server import main

raise SystemExit(main())
