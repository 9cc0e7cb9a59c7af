"""The embedded PostgreSQL + pgvector (extra `embedded`): the server in a data folder (`server`)
and the bookkeeping that keeps it from outliving its owners (`lifecycle`)."""

from .server import *  # noqa: F403  (the package's API is the server module's)
from .server import __all__  # noqa: F401
