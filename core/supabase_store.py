"""`core.supabase_store` is `core.stores.supabase`: the same module object, not a copy.

The seed's tests patch names on this path (`core.supabase_store.create_client`); aliasing the module
in `sys.modules` makes such a patch reach the code that uses the name.
"""

import sys

from .stores import supabase as _module

sys.modules[__name__] = _module
