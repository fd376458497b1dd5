"""The one exception type meant for users.

Anything raised as :class:`RetrievalError` is a problem with the user's input (a missing folder,
a corrupt file, a bad flag value). The CLI prints its message as one line and exits non-zero;
the app shows it as an error box. Every other exception is a bug and keeps its traceback.
:class:`LostProcesses`, one kind of it, also tells the CLI to leave without tearing torch down;
:class:`ImageSizeError`, another, says whether an image was too large, too small or too elongated.
:func:`close_names` gives the known names a typed name probably meant, :func:`did_you_mean` a message's
" (did you mean …?)" made of them.
"""

from collections.abc import Iterable


class RetrievalError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""


class LostProcesses(RetrievalError):
    """A collective failed under torchrun: another process died, failed or hangs
    (:func:`retrieval.distributed.process_group`). After that, torch's gloo state can abort the
    interpreter's own exit ("terminate called without an active exception", SIGABRT: seen in 2 of
    about 45 test sessions whose other process had died), burying the message under a crash, so
    the CLI prints it and ends the process at once (``os._exit``)."""


class ImageSizeError(RetrievalError):
    """An image refused for its size before it is decoded (:mod:`retrieval.data.images`): ``too``
    is ``"large"`` (more pixels than the limit, or a decompression bomb), ``"small"`` (a side
    under the minimum) or ``"elongated"`` (sides further apart than the limit's ratio), so that a
    page can say which picture to give instead."""

    def __init__(self, message: str, too: str):
        super().__init__(message)
        self.too = too


def close_names(asked: Iterable[str], known: Iterable[str]) -> list[str]:
    """The known names each asked name probably meant, in order and once each: the same name in
    another case, else up to three that begin with it (a name typed short: "bottle-tea" for
    "bottle-teal-letter-a"), else up to two within difflib's ratio 0.75 (a letter or two off)."""
    import difflib

    known = sorted({str(name) for name in known})
    by_case = {name.lower(): name for name in known}
    close: list[str] = []
    for name in asked:
        if name.lower() in by_case:
            close.append(by_case[name.lower()])
            continue
        longer = [k for k in known if name and k.lower().startswith(name.lower())][:3]
        close += longer or difflib.get_close_matches(name, known, n=2, cutoff=0.75)
    return list(dict.fromkeys(close))


def did_you_mean(asked: str | Iterable[str], known: Iterable[str]) -> str:
    """" (did you mean A, B?)" for the :func:`close_names` of ``asked`` (one name or several), or ""
    when none is close."""
    close = close_names([asked] if isinstance(asked, str) else asked, known)
    return f" (did you mean {', '.join(close)}?)" if close else ""
