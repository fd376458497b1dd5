"""The one exception type meant for users.

Anything raised as :class:`RetrievalError` is a problem with the user's input (a missing folder,
a corrupt file, a bad flag value). The CLI prints its message as one line and exits non-zero;
the app shows it as an error box. Every other exception is a bug and keeps its traceback.
"""


class RetrievalError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
