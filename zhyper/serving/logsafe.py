"""Log lines a client cannot forge: control characters in whatever a request brings (its path, headers,
descriptions, messages) are written escaped, so a ``%0a`` in a URL never starts a new line in the log.

``safe_logger(__name__)`` is ``logging.getLogger`` with ``EscapeControl`` attached: every record of that
logger has its formatted message escaped (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028`` ...) before any
handler sees it. Printable text, non-ASCII letters included, is left as it is; tracebacks (``exc_info``)
are formatted by the handler as usual.
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
        return True


_FILTER = EscapeControl()


def safe_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` whose messages are written with control characters escaped."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
