"""One line of a JSON-lines file as an object, with one wording for what is wrong with it.

Every reader of JSON lines (texts, labeled data, pairs, features) refuses a
bad line the same way, naming the file and line: ``file:12: not valid JSON
(Expecting ',' delimiter at column 18)`` or ``file:12: expected a JSON
object, found list``.
"""

from __future__ import annotations

import json


def json_object(text: str) -> dict:
    """The object on ``text``; a ValueError saying why when it is not valid JSON or not an object."""
    try:
        record = json.loads(text)
    except ValueError as err:
        reason = getattr(err, "msg", str(err))
        column = getattr(err, "colno", None)
        raise ValueError(f"not valid JSON ({reason}{f' at column {column}' if column else ''})") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, found {type(record).__name__}")
    return record
