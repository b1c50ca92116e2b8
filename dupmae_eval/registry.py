"""The shape every extension point shares: a table of named entries, each registered once.

Encoder kinds, retrieval modes, dataset layouts and table formats are each a `Registry`; the CLI's
choices, the suite validation and the runner read the table, so adding a variant is one `register`.
"""

from __future__ import annotations

from typing import Dict, Generic, TypeVar

from dupmae_eval.errors import DupMAEEvalError

Entry = TypeVar("Entry")


class Registry(Dict[str, Entry], Generic[Entry]):
    """name -> entry (each entry has a `name`); `what` names the extension point in error messages."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, entry: Entry) -> Entry:
        """Add (or replace) an entry; from then on everything that reads this registry accepts it."""
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> Entry:
        """The entry called `name`, or one clear line listing the names there are."""
        try:
            return self[name]
        except KeyError:
            raise DupMAEEvalError(f"unknown {self.what} {name!r}; choose one of {', '.join(self)}") from None
