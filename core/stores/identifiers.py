"""SQL identifiers the library pastes into statements (tables, functions): plain, unquoted names only.

Names cannot be bound as parameters, so rather than quote them the library accepts only
lowercase letters, digits and underscores, at most 63 characters, and no keyword.
"""

from __future__ import annotations

import re

from ..errors import ConfigurationError

__all__ = ["validate_identifier"]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# PostgreSQL keywords that cannot name a table or a function unquoted
# (`select catcode, word from pg_get_keywords() where catcode in ('R','T','C')`,
# PostgreSQL 18). The rendered SQL does not quote names, so they are refused.
_KEYWORDS = frozenset(
    """
    all analyse analyze and any array as asc asymmetric both case cast check collate
    column constraint create current_catalog current_date current_role current_time
    current_timestamp current_user default deferrable desc distinct do else end
    except false fetch for foreign from grant group having in initially intersect
    into lateral leading limit localtime localtimestamp not null offset on only or
    order placing primary references returning select session_user some symmetric
    system_user table then to trailing true union unique user using variadic when
    where window with authorization binary collation concurrently cross
    current_schema freeze full ilike inner is isnull join left like natural notnull
    outer overlaps right similar tablesample verbose between bigint bit boolean char
    character coalesce dec decimal exists extract float greatest grouping inout int
    integer interval json json_array json_arrayagg json_exists json_object
    json_objectagg json_query json_scalar json_serialize json_table json_value least
    merge_action national nchar none normalize nullif numeric out overlay position
    precision real row setof smallint substring time timestamp treat trim values
    varchar xmlattributes xmlconcat xmlelement xmlexists xmlforest xmlnamespaces
    xmlparse xmlpi xmlroot xmlserialize xmltable
    """.split()  # noqa: SIM905  (one keyword list, easier to diff than a literal)
)


def validate_identifier(name: str, what: str) -> str:
    """Check that `name` is a plain, unquoted SQL identifier and return it.

    Names are pasted into SQL text (they cannot be bound as parameters), so only
    lowercase letters, digits and underscores are accepted, at most 63 characters
    (PostgreSQL's limit, beyond which it silently truncates), and not a keyword.

    Args:
        name: The identifier to check.
        what: What it names, for the error message (e.g. ``"table"``).

    Returns:
        `name`, unchanged.

    Raises:
        ConfigurationError: If `name` is not a string, not a plain identifier, or
            an SQL keyword.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} name {name!r}: use 1-63 lowercase letters, digits or "
            "underscores, not starting with a digit"
        )
    if name in _KEYWORDS:
        raise ConfigurationError(f"invalid {what} name {name!r}: it is an SQL keyword")
    return name
