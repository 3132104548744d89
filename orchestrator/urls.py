"""URLs for storages and trackers: hide passwords before anything is printed, logged, tagged or stored.

Parsers disagree on where a password ends. SQLAlchemy takes everything up to the first ``@`` (``/``, ``:``,
``?``, ``#`` and spaces included: ``postgresql://u:p%40ss/w@host/db`` has the password ``p@ss/w``);
urllib and requests take everything up to the last ``@`` before the first ``/``. The mask covers the union:
from ``scheme://user:`` to the last ``@`` of the word holding the first ``@``. It may hide a little too much
(a port and path followed by an ``@`` on the same line), never too little.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# scheme://user: ... password (anything but '@' and a newline, spaces included) ... @ (the last one of that word)
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)"
    r"(?P<pw>[^@\n]*?(?:@[^@\s]*)*?)"
    r"(?P<at>@)(?=[^@\s]*(?:\s|$))"
)
# secret query parameters (?password=, &token=) and libpq keywords (`password=... host=...`)
_SECRET_KEY = re.compile(
    r"(?P<key>(?<![\w.-])(?:password|passwd|pwd|token|secret|access_key|sas)=)(?P<v>'[^']*'|\"[^\"]*\"|[^&\s]*)",
    re.IGNORECASE,
)


def mask_url(text: str | None, *urls: str | None) -> str:
    """Return ``text`` with every URL password and secret key value replaced by ``***``.

    ``urls``: URLs whose passwords may appear in ``text`` on their own (a driver's error message may quote the
    decoded password); every form of those passwords is hidden too.
    """
    if not text:
        return text or ""
    secrets = sorted({s for u in urls for s in _passwords(u)}, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, "***")
    text = _USERINFO.sub(lambda m: f"{m['head']}***{m['at']}", text)
    return _SECRET_KEY.sub(lambda m: f"{m['key']}***", text)


def _passwords(url: str | None) -> set[str]:
    """Every reading of ``url``'s password (SQLAlchemy's, urllib's, the matched text), raw and decoded."""
    if not url:
        return set()
    found = {m["pw"] for m in _USERINFO.finditer(url)}
    found |= {m["v"].strip("'\"") for m in _SECRET_KEY.finditer(url)}
    try:
        found.add(urlsplit(url).password or "")
    except ValueError:
        pass
    try:
        from sqlalchemy.engine import make_url

        found.add(make_url(url).password or "")
    except Exception:  # not a database URL, or SQLAlchemy missing: the other readings remain
        pass
    found |= {unquote(p) for p in found}
    # a parser that stops at '/', '?', '#' or '@' quotes a piece ("nonnumeric port: 'p%40ss'"): hide pieces too
    found |= {piece for p in found for piece in re.split(r"[/?#@]", p)}
    return {p for p in found if len(p) >= 3 and p != "***"}  # a 1-2 character piece would mask every digit
