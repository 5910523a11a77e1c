"""Log lines a client cannot forge: control characters in whatever a request brings (its path, headers,
descriptions, messages) are written escaped, so a ``%0a`` in a URL never starts a new line in the log.

``safe_logger(__name__)`` is ``logging.getLogger`` with ``EscapeControl`` attached: every record of that
logger has its formatted message escaped (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028`` ...) before any
handler sees it, and so has the text of each exception in its traceback (the frames stay as they are).
Printable text, non-ASCII letters included, is left as it is.
"""

from __future__ import annotations

import logging
import re

# C0 and C1 controls, DEL, and the Unicode line / paragraph separators: what a terminal or a log reader
# may take as a new line or a command
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match) -> str:
    c = match.group()
    if c in _NAMED:
        return _NAMED[c]
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as its escape (``"a\\nb"`` -> ``"a\\\\nb"``)."""
    return _CONTROL.sub(_escaped, text)


class EscapeControl(logging.Filter):
    """Escapes the control characters of a record's message (its arguments formatted in first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler, which reports it
            return True
        if _CONTROL.search(message):
            record.msg, record.args = escape(message), ()
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            record.exc_text = format_exception(record.exc_info)
        return True


def format_exception(exc_info) -> str:
    """A traceback as ``logging`` writes it, with each exception's own text (which a request may have put
    there) escaped: the frames, and the lines that join chained exceptions, are kept as they are."""
    import traceback

    out = []
    for part in traceback.TracebackException(*exc_info).format():
        kept = part.startswith(("  ", "\n", "Traceback (most recent call last):"))
        out.append(part if kept else escape(part.rstrip("\n")) + "\n")
    return "".join(out).rstrip("\n")


_FILTER = EscapeControl()


def safe_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose messages are written with control characters escaped."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
