"""Put a tool's output in place without ever losing the old one, the new one, or someone else's data.

Every output is built in a hidden sibling `.NAME.tmp-XXXX/` that records its owner (pid, host).
Replacing an old output moves it aside into that staging dir first, moves the new one in, and
only then deletes the old one; the two renames run with SIGINT/SIGTERM held back. A run that was
killed anyway (SIGKILL, power loss) is repaired by the next run for the same output: a staging
dir whose owner is gone is removed, and an old output it had moved aside is put back first if
nothing took its place.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
from typing import Iterable, List, Optional, Sequence, Tuple

OWNER = "owner.json"
ASIDE = "replaced"              # an old output directory, moved aside
ASIDE_FILES = "replaced-files"  # old output files of a directory that is kept (region-score's --out)
SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class OutputError(ValueError):
    """An output location that cannot be used or replaced; the message names the flag and the fix."""


def staging_prefix(out: str) -> str:
    return f".{os.path.basename(os.path.abspath(out).rstrip(os.sep))}.tmp-"


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_staging(out: str) -> str:
    """A new staging dir beside `out`, owned by this process (0777 minus umask, like mkdir)."""
    out = os.path.abspath(out)
    root = tempfile.mkdtemp(prefix=staging_prefix(out), dir=os.path.dirname(out))
    os.chmod(root, 0o777 & ~umask())
    with open(os.path.join(root, OWNER), "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_gone(root: str) -> bool:
    try:
        with open(os.path.join(root, OWNER)) as f:
            owner = json.load(f)
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not provably ours: leave it
    return host == socket.gethostname() and pid != os.getpid() and not _alive(pid)


def reap_stale(out: str) -> List[str]:
    """Remove staging dirs of `out` whose owner process is gone; restore an old output one had moved aside.

    Returns one line per action, for the caller to print.
    """
    out = os.path.abspath(out)
    parent, prefix = os.path.dirname(out), staging_prefix(out)
    notes = []
    try:
        names = sorted(n for n in os.listdir(parent) if n.startswith(prefix))
    except OSError:
        return notes
    for name in names:
        root = os.path.join(parent, name)
        if not os.path.isdir(root) or os.path.islink(root) or not _owner_gone(root):
            continue
        aside = os.path.join(root, ASIDE)
        if os.path.lexists(aside) and not os.path.lexists(out):
            os.rename(aside, out)
            notes.append(f"restored {out} from {root} (an interrupted run had moved it aside)")
        files = os.path.join(root, ASIDE_FILES)
        if os.path.isdir(files) and os.path.isdir(out):
            for name in sorted(os.listdir(files)):
                if not os.path.lexists(os.path.join(out, name)):
                    os.rename(os.path.join(files, name), os.path.join(out, name))
                    notes.append(f"restored {os.path.join(out, name)} (an interrupted run had moved it aside)")
        shutil.rmtree(root, ignore_errors=True)
        notes.append(f"removed {root} left by an interrupted run")
    return notes


@contextlib.contextmanager
def signals_held():
    """Defer SIGINT/SIGTERM for a few renames, so Ctrl-C cannot land between them.

    A deferring Python handler records the signal and it is raised again once the renames are done.
    (Blocking with `pthread_sigmask` is not enough: the kernel hands a process-wide signal to any
    thread that has it unblocked, e.g. a torch worker thread, and Python then raises in the main
    thread at its next bytecode, which may be between the renames.) Handlers can only be set from
    the main thread; elsewhere nothing is deferred.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: List[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in held}
    for sig in held:
        signal.signal(sig, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        for sig in pending:
            signal.raise_signal(sig)


def swap_dir(new: str, out: str, root: str) -> None:
    """Move directory `new` to `out`; an existing `out` goes to `root/replaced` first and is restored on failure."""
    aside = os.path.join(root, ASIDE)
    with signals_held():
        moved = False
        if os.path.lexists(out):
            os.rename(out, aside)
            moved = True
        try:
            os.rename(new, out)
        except BaseException:
            if moved and not os.path.lexists(out):
                os.rename(aside, out)
            raise


def swap_files(new_dir: str, out: str, names: Sequence[str], root: str) -> None:
    """Replace files `names` in `out` by those in `new_dir` as one unit: all new, or all old on failure."""
    aside = os.path.join(root, ASIDE_FILES)
    os.makedirs(aside, exist_ok=True)
    moved_old: List[str] = []
    moved_new: List[str] = []
    with signals_held():
        try:
            for name in names:
                if os.path.lexists(os.path.join(out, name)):
                    os.rename(os.path.join(out, name), os.path.join(aside, name))
                    moved_old.append(name)
            for name in names:
                os.rename(os.path.join(new_dir, name), os.path.join(out, name))
                moved_new.append(name)
        except BaseException:
            for name in moved_new:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(out, name))
            for name in moved_old:
                with contextlib.suppress(OSError):
                    os.rename(os.path.join(aside, name), os.path.join(out, name))
            raise


def remove_staging(root: str, out: Optional[str] = None) -> None:
    """Delete a staging dir; an old output still moved aside in it is put back first (never deleted)."""
    aside = os.path.join(root, ASIDE)
    if out is not None and os.path.isdir(aside) and not os.path.lexists(out):
        with contextlib.suppress(OSError):
            os.rename(aside, out)
    shutil.rmtree(root, ignore_errors=True)


def is_out_of_space(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in SPACE_ERRNOS


def space_message(e: OSError, flag: str, out: str) -> str:
    return (f"{flag} {out!r}: the disk is full or a size limit was hit while writing ({e.strerror}); nothing was "
            "written there and the temporary files were removed. Free space (or choose another location) and rerun")


def check_replaceable(out: str, flag: str, marker: str, keys: Iterable[str], tool: str) -> None:
    """Refuse to replace a directory this tool did not write: it must be empty or hold our `marker` JSON."""
    if not os.listdir(out):  # hidden files count: a dir holding only .git is someone's data
        return
    path = os.path.join(out, marker)
    try:
        with open(path) as f:
            data = json.load(f)
        ours = isinstance(data, dict) and all(k in data for k in keys)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise OutputError(f"{flag} {out!r} exists and was not written by {tool} (no {marker} of ours in it), so "
                          "--overwrite will not replace it; choose a new directory or remove it yourself")


def check_apart_from_inputs(out: str, flag: str, inputs: Iterable[Tuple[str, Optional[str]]]) -> None:
    """Refuse an output location that is, or lies inside, an input directory: inputs are never written."""
    real_out = os.path.realpath(os.path.abspath(out))
    for in_flag, path in inputs:
        if not path or not os.path.isdir(path):
            continue
        real_in = os.path.realpath(os.path.abspath(path))
        if real_out == real_in or real_out.startswith(real_in.rstrip(os.sep) + os.sep):
            raise OutputError(f"{flag} {out!r} lies inside the input {in_flag} {path!r}; outputs never go into an "
                              f"input directory: choose another {flag}")
