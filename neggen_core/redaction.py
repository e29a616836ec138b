"""Credentials out of what NegGen writes and logs: a URL's userinfo (`user:password@`) and its
query string (signed URLs carry their token there) are replaced before a URL reaches a
manifest, a report, an error message or the log. The data itself is identified by its content
hash (the ingest version), never by the URL's secret parts."""

from __future__ import annotations

import re

# scheme://[userinfo@]rest[?query][#fragment]
URL = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)?(?P<rest>[^\s?#]*)"
    r"(?P<query>\?[^\s#]*)?"
)


def redact(text: str) -> str:
    """`text` with every URL's userinfo and query string replaced by `***`."""

    def clean(match: re.Match[str]) -> str:
        userinfo = "***@" if match.group("userinfo") else ""
        query = "?***" if match.group("query") else ""
        return f"{match.group('scheme')}{userinfo}{match.group('rest')}{query}"

    return URL.sub(clean, text)
