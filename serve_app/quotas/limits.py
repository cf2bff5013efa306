"""A tenant's quota, as its entry in the keys file gives it.

    - key: sk-acme-...
      name: acme
      max_concurrent_requests: 4     # requests running at once, over every replica
      tokens_per_minute: 20000       # prompt + completion tokens, refilled continuously

Each is optional; a tenant with none is never counted. Zero, negative and
non-integer values are refused when the file is read, naming the field.
(A bound on the engine slots one tenant's adapters hold is not here yet: the
field is refused as unknown rather than accepted and ignored.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FIELDS = ("max_concurrent_requests", "tokens_per_minute")


@dataclass(frozen=True)
class Quota:
    max_concurrent_requests: int | None = None
    tokens_per_minute: int | None = None

    @property
    def counted(self) -> bool:
        """Whether requests of this tenant go through the shared counters."""
        return self.max_concurrent_requests is not None or self.tokens_per_minute is not None

    def to_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def quota_of(entry: dict[str, Any], where: str) -> Quota | None:
    """The quota fields of a keys-file entry (None: it sets none); ValueError names a bad field."""
    values = {}
    for name in FIELDS:
        if name not in entry:
            continue
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where}.{name}: must be a whole number of at least 1, not {value!r}")
        values[name] = value
    return Quota(**values) if values else None
