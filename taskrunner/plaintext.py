"""Text from a job (an exception's message, its type's name) as a terminal may show it.

A message is the user's, or the user's data's: it may hold an escape sequence that clears
the screen or recolours what follows, a carriage return that hides the line's start, or a
newline that breaks a one-line summary. What is printed for a person shows each control
character as its escape instead (`\\x1b`, `\\r`, `\\n`); what is saved, and the JSON views,
keep the text as it came.

A message may also be huge (an exception that holds a whole payload, megabytes of it): a
line shown as it happens is cut after SHOWN_CHARACTERS, saying how many more there are and
where to read them all.
"""

from __future__ import annotations

# C0 controls, DEL and the C1 controls (a lone \x9b starts an escape on some terminals).
_CONTROLS = [*range(32), *range(127, 160)]
_ESCAPES = {code: repr(chr(code))[1:-1] for code in _CONTROLS}
_ESCAPES_BUT_NEWLINES = {code: text for code, text in _ESCAPES.items() if code != ord("\n")}
# A few lines of a terminal: enough to recognise a message by, not a payload's worth.
SHOWN_CHARACTERS = 500


def shown(text: str, *, lines: bool = False) -> str:
    """`text` with its control characters escaped; with `lines`, newlines kept (a
    traceback is shown as its lines)."""
    return text.translate(_ESCAPES_BUT_NEWLINES if lines else _ESCAPES)


def clipped(text: str, *, where: str, limit: int = SHOWN_CHARACTERS) -> str:
    """`text` cut after `limit` characters, and how many more there were, which `where`
    (a command) shows in full; `text` itself when it is no longer."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters; {where} shows all)"
