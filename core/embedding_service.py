"""`core.embedding_service` is `core.embed.service`: the same module object, not a copy.

The seed's tests patch names on this path (`core.embedding_service.OpenAI`); aliasing the module
in `sys.modules` makes such a patch reach the code that uses the name.
"""

import sys

from .embed import service as _module

sys.modules[__name__] = _module
