"""URLs for storages and trackers: hide passwords before anything is printed, logged or tagged."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host (the password may hold anything but '@' and '/')
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^/\s]+)(?P<at>@)")
# query parameters that carry secrets (password=, token=, ...)
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|access_key|sas)=)[^&\s]*", re.IGNORECASE)


def mask_url(text: str | None) -> str:
    """Return ``text`` with every URL password and secret query value replaced by ``***``."""
    if not text:
        return text or ""
    text = _USERINFO.sub(lambda m: f"{m['head']}***{m['at']}", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}***", text)
