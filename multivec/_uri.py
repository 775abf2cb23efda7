"""Connection URIs: ``scheme[+driver]://location[?option=value&...]``, parsed once.

The location means what the backend says it means: a directory for embedded engines
(``lancedb://./data``, ``lancedb:///abs/path``), a name for ``memory://``, ``host:port`` for a
server (``qdrant+grpc://user:secret@db:6334``). Options after ``?`` are passed to the backend.
Secrets (a password, or an option named like a key or token) never appear in ``repr`` or ``str``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import parse_qsl, unquote, urlencode

from multivec.errors import ConfigurationError

__all__ = ["URI"]

_SCHEME = re.compile(
    r"^(?P<scheme>[a-z][a-z0-9]*)(?:\+(?P<driver>[a-z][a-z0-9_]*))?://(?P<rest>.*)$"
)
_SECRET_OPTIONS = frozenset({"api_key", "apikey", "token", "password", "secret"})
_MASK = "***"


@dataclass(frozen=True)
class URI:
    """An immutable, parsed connection URI.

    Attributes:
        scheme: The backend name, e.g. ``"lancedb"``.
        driver: The flavour after ``+``, e.g. ``"grpc"`` in ``qdrant+grpc://``; ``None`` if absent.
        location: Everything between ``://`` and ``?``, percent-decoded.
        options: The query-string options.
    """

    scheme: str
    driver: str | None
    location: str
    options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def parse(cls, uri: str | URI) -> URI:
        """Parse ``uri``; a plain path with no scheme is an error that names the accepted forms.

        >>> URI.parse("lancedb://./data?index=ivf")
        URI('lancedb://./data?index=ivf')
        >>> URI.parse("qdrant://u:pw@host:6333?api_key=k")
        URI('qdrant://u:***@host:6333?api_key=***')
        """
        if isinstance(uri, URI):
            return uri
        match = _SCHEME.match(uri.strip())
        if match is None:
            raise ConfigurationError(
                f"{uri!r} is not a multivec URI; write scheme://location, for example "
                "'lancedb://./data', 'memory://' or 'qdrant://localhost:6333'"
            )
        rest, _, query = match["rest"].partition("?")
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=False))
        return cls(
            scheme=match["scheme"],
            driver=match["driver"],
            location=unquote(rest),
            options=MappingProxyType(options),
        )

    @property
    def userinfo(self) -> tuple[str | None, str | None]:
        """The ``(user, password)`` of a ``user:password@host`` location, or ``(None, None)``."""
        head, at, _ = self.location.rpartition("@")
        if not at:
            return None, None
        user, colon, password = head.partition(":")
        return user or None, (password if colon else None)

    @property
    def hostport(self) -> str:
        """The location without user information or path: ``host[:port]``."""
        _, _, tail = self.location.rpartition("@")
        return tail.split("/", 1)[0]

    def option(self, name: str, default: str | None = None) -> str | None:
        """Return the option ``name``, or ``default`` when it is absent."""
        return self.options.get(name, default)

    def render(self, *, mask_secrets: bool = True) -> str:
        """Return the URI as text, with secrets masked unless ``mask_secrets`` is false."""
        location = self.location
        user, password = self.userinfo
        if password is not None and mask_secrets:
            location = f"{user or ''}:{_MASK}@{location.rpartition('@')[2]}"
        options = {
            key: (_MASK if mask_secrets and key.lower() in _SECRET_OPTIONS else value)
            for key, value in self.options.items()
        }
        scheme = f"{self.scheme}+{self.driver}" if self.driver else self.scheme
        query = f"?{urlencode(options, safe='*/:')}" if options else ""
        return f"{scheme}://{location}{query}"

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return f"URI({self.render()!r})"
