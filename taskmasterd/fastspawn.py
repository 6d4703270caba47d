"""posix_spawn(3) through ctypes: a process started without holding the GIL.

Why: subprocess (Python 3.11 as Debian 12 ships it, 3.11.2) starts a child
with vfork() and holds the GIL until the child has called exec -- fixed
upstream in 3.11.6 (gh-104372). The parent waits for the child to be
scheduled and to exec: ~0.15 ms on an idle machine, 0.5-3 ms when the
CPUs are busy with the tasks it already started. The task runner starts
every task, so that wait, one task after another, bounded how fast short
tasks could run (1000 `true` in 16 lanes: the runner blocked 0.8 s of
1.7 s). A ctypes call releases the GIL; glibc's posix_spawn uses
clone(CLONE_VM | CLONE_VFORK) like subprocess, so from worker threads
the waits overlap, and the event loop runs meanwhile.

What the child gets, as subprocess.Popen(..., stdin=DEVNULL, stdout=,
stderr=, start_new_session=True, close_fds=True, cwd=) gives it: stdin
/dev/null, stdout and stderr the two descriptors, a new session, every
other descriptor closed (closefrom(3)), the signal mask cleared and
SIGPIPE/SIGXFSZ back to their defaults (Python ignores them), `cwd`.
What it cannot do -- switch users, set a umask -- stays with subprocess
(taskmasterd/spawn.py); the caller chooses (`supported`).

glibc only (posix_spawn_file_actions_addclosefrom_np is 2.34+, addchdir_np
2.29+; Debian 12 has 2.36): `AVAILABLE` is False elsewhere and callers use
subprocess.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Mapping, Sequence

# <spawn.h> flags (glibc)
_SETSIGDEF = 0x04
_SETSIGMASK = 0x08
_SETSID = 0x80
# Opaque glibc structures, with room to spare: posix_spawn_file_actions_t is
# 80 bytes and posix_spawnattr_t 336 on x86_64 and arm64; sigset_t 128.
_FILE_ACTIONS_SIZE = 256
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256


def _load() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        for name in ("posix_spawn", "posix_spawn_file_actions_addclosefrom_np",
                     "posix_spawn_file_actions_addchdir_np", "posix_spawnattr_setflags"):
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    ptr = ctypes.c_void_p
    libc.posix_spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ptr, ptr,
                                 ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p)]
    libc.posix_spawn_file_actions_addopen.argtypes = [ptr, ctypes.c_int, ctypes.c_char_p,
                                                      ctypes.c_int, ctypes.c_uint]
    libc.posix_spawn_file_actions_adddup2.argtypes = [ptr, ctypes.c_int, ctypes.c_int]
    libc.posix_spawn_file_actions_addclosefrom_np.argtypes = [ptr, ctypes.c_int]
    libc.posix_spawn_file_actions_addchdir_np.argtypes = [ptr, ctypes.c_char_p]
    libc.posix_spawnattr_setflags.argtypes = [ptr, ctypes.c_short]
    for name in ("posix_spawn_file_actions_init", "posix_spawn_file_actions_destroy",
                 "posix_spawnattr_init", "posix_spawnattr_destroy", "sigemptyset"):
        getattr(libc, name).argtypes = [ptr]
    libc.sigaddset.argtypes = [ptr, ctypes.c_int]
    libc.posix_spawnattr_setsigmask.argtypes = [ptr, ptr]
    libc.posix_spawnattr_setsigdefault.argtypes = [ptr, ptr]
    return libc


_libc = _load()
AVAILABLE = _libc is not None


def supported(user: str | None, cwd: str | None) -> bool:
    """Whether a task can be started here: no user to switch to, and a
    working directory (if any) that exists and can be entered -- else
    subprocess starts it and says precisely which step failed (this
    module's errors cannot tell a chdir failure from an exec failure)."""
    if not AVAILABLE or user is not None:
        return False
    return cwd is None or (os.path.isdir(cwd) and os.access(cwd, os.X_OK))


def resolve(command: str, env: Mapping[str, str]) -> str | None:
    """The file `command` runs, searched in the PATH of `env` as subprocess
    does (a name with a slash is used as is); None when no executable file
    is found (subprocess then gives the exact error of each attempt)."""
    if "/" in command:
        return command
    for directory in os.get_exec_path(dict(env)):
        path = os.path.join(directory, command)
        if os.access(path, os.X_OK) and not os.path.isdir(path):
            return path
    return None


def environ_block(base: Mapping[str, bytes], extra: Mapping[str, str]) -> list[bytes]:
    """`base` (name -> b"NAME=value", encoded once by the caller) with the
    variables of `extra` over it."""
    if not extra:
        return list(base.values())
    merged = dict(base)
    for name, value in extra.items():
        merged[name] = os.fsencode(name) + b"=" + os.fsencode(value)
    return list(merged.values())


def encode_environ(env: Mapping[str, str]) -> dict[str, bytes]:
    """An environment as environ_block's `base`."""
    out = {}
    for name, value in env.items():
        if "=" in name or "\0" in name or "\0" in value:
            continue  # what the kernel could not take (os.environ never holds one)
        out[name] = os.fsencode(name) + b"=" + os.fsencode(value)
    return out


def spawn(path: str, argv: Sequence[str], envp: Sequence[bytes], *, stdout: int, stderr: int,
          cwd: str | None = None) -> int:
    """Start `path` (any thread; the GIL is released while glibc waits for
    the child's exec): its pid, or OSError with the errno glibc returned
    (the exec's, mostly: ENOENT, EACCES, ENOEXEC...). Raises ValueError for
    an argument holding a NUL byte, as subprocess does."""
    libc = _libc
    if libc is None:
        raise OSError(38, "posix_spawn is not available")  # ENOSYS
    args = [os.fsencode(a) for a in argv]
    if any(b"\0" in a for a in args) or "\0" in path or (cwd is not None and "\0" in cwd):
        raise ValueError("embedded null byte")
    c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
    c_envp = (ctypes.c_char_p * (len(envp) + 1))(*envp, None)
    actions = ctypes.create_string_buffer(_FILE_ACTIONS_SIZE)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    empty = ctypes.create_string_buffer(_SIGSET_SIZE)
    defaults = ctypes.create_string_buffer(_SIGSET_SIZE)
    _check(libc.posix_spawn_file_actions_init(actions))
    try:
        _check(libc.posix_spawnattr_init(attr))
        try:
            _check(libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0))
            _check(libc.posix_spawn_file_actions_adddup2(actions, stdout, 1))
            _check(libc.posix_spawn_file_actions_adddup2(actions, stderr, 2))
            _check(libc.posix_spawn_file_actions_addclosefrom_np(actions, 3))
            if cwd is not None:
                _check(libc.posix_spawn_file_actions_addchdir_np(actions, os.fsencode(cwd)))
            libc.sigemptyset(empty)
            libc.sigemptyset(defaults)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                libc.sigaddset(defaults, int(sig))
            _check(libc.posix_spawnattr_setsigmask(attr, empty))
            _check(libc.posix_spawnattr_setsigdefault(attr, defaults))
            _check(libc.posix_spawnattr_setflags(attr, _SETSID | _SETSIGMASK | _SETSIGDEF))
            pid = ctypes.c_int(0)
            _check(libc.posix_spawn(ctypes.byref(pid), os.fsencode(path), actions, attr,
                                    c_argv, c_envp))
            return pid.value
        finally:
            libc.posix_spawnattr_destroy(attr)
    finally:
        libc.posix_spawn_file_actions_destroy(actions)


def _check(err: int) -> None:
    """posix_spawn* return the error number itself (0: done)."""
    if err:
        raise OSError(err, os.strerror(err))
