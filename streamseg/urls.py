"""URLs as people see them: never with credentials, in messages, names, records or tracebacks.

Shared by sources and sinks, since both print the URLs they open. Redaction never raises: a URL that
``urllib`` cannot parse (a password holding a raw ``/``, ``?`` or ``#``) is still shown without its secret.
"""

from __future__ import annotations

import re

__all__ = ["redact", "redact_text", "scrub", "url_name", "url_problem"]

# A query or path parameter whose key names a credential (``password=``, ``X-Amz-Signature=``,
# ``streamKey=``, ``user=``): its value is a secret. Keys are matched by what they contain, so that a
# vendor's spelling is caught too; hiding a harmless value is the cheaper mistake.
_SECRET_PAIR = re.compile(
    r"(?i)(?P<key>[\w.\-]*(?:pass|pwd|token|key|auth|sig|secret|user|login|cred|session)[\w.\-]*)"
    r"=(?P<value>[^&;/?#\s]*)"
)
# A URL in free text: a scheme, ``://``, and everything up to white space or a quote.
_URL_IN_TEXT = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.\-]*)?://[^\s'\"<>]+")


def redact(url: str) -> str:
    """The URL without user name, password, query string or fragment, and with the values of credential
    parameters in its path hidden (``rtsp://***@cam:554/user=***&password=***&channel=1``).

    Everything before the last ``@`` is the user part: a password may hold ``/``, ``?`` or ``#``, so the
    usual end of the host cannot be trusted before it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    user, at, rest = rest.rpartition("@")
    rest = re.split(r"[?#]", rest, maxsplit=1)[0]
    rest = _SECRET_PAIR.sub(lambda m: f"{m['key']}=***", rest)
    return f"{scheme}://{'***@' if at else ''}{rest}"


def url_problem(url: str) -> str | None:
    """Why FFmpeg cannot open ``url`` as written, or None. A user part with a raw ``/``, ``?`` or ``#``
    (``rtsp://admin:Pr1v/ate@cam/live``) ends the host early in FFmpeg's parse, as in every URL parser:
    it would connect to host ``admin`` on port ``Pr1v``. Said before anything connects, without the secret."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    port = authority.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if "@" in rest[len(authority):] and "@" not in authority and port and not port.isdigit():
        return ("its user name or password holds a raw '/', '?' or '#', which ends the host in FFmpeg's "
                "reading: write them percent-encoded (%2F, %3F, %23)")
    return None


def redact_text(text: str) -> str:
    """``text`` (a message, a traceback) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda m: redact(m.group(0)), text)


def url_name(url: str) -> str:
    """A short name for a URL, fit for file names and records: the last part of its path without any
    credential parameter (``channel=1``), else its host, else ``stream``."""
    _, _, rest = redact(url).partition("://")
    host, _, path = rest.removeprefix("***@").partition("/")
    last = path.rstrip("/").rsplit("/", 1)[-1]
    last = _SECRET_PAIR.sub("", last)
    last = re.sub(r"[&;]{2,}", "&", last).strip("&;")
    return last or host.rsplit(":", 1)[0].strip("[]") or "stream"


def scrub(exc: BaseException) -> BaseException:
    """Redact the URLs in an exception and the ones it was raised from, in place, and return it: PyAV's
    errors carry the URL they failed on, credentials included, in ``filename`` and ``args``, and a
    traceback prints the whole chain."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(redact_text(a) if isinstance(a, str) else a for a in current.args)
        for attr in ("filename", "filename2"):
            value = getattr(current, attr, None)
            if isinstance(value, str):
                try:
                    setattr(current, attr, redact_text(value))
                except (AttributeError, TypeError):  # a read-only attribute: args above hold the same text
                    pass
        current = current.__cause__ or current.__context__
    return exc
