"""The program the sandbox interpreter runs (``python -I -S -B -u harness.py KEY=VALUE...``).

Standard library only, and nothing from the project: it runs outside any virtualenv, possibly as a uid
that cannot read the project. The first process is trusted (no generated code ever runs in it): it reads
the token from stdin and the sources from the working directory, unshares the namespaces and forks, then
waits for its child with the wall clock and passes the child's exit on. The child, PID 1 of the new PID
namespace when there is one, applies the rlimits, drops to the run's uid, installs the seccomp filter the
runner built (``seccomp.py``), and executes the solution and then the tests in one namespace. Only after
the last test does it write the token.

With a new mount namespace (the built-in backend) the trusted half also gives the run private, sized tmpfs
over the host's shared writable folders (``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/run/lock``) and over its
working folder, so nothing it writes reaches the host's disk or outlives it.

The set-up fails closed: when a step it was asked for fails, it exits with the ``setup`` status.

Start-up is paid on every run, so the configuration comes as ``key=value`` arguments rather than JSON,
and json, re, contextlib and traceback (each a few milliseconds to import) are not imported up front.
"""

from __future__ import annotations

import builtins
import ctypes
import os
import resource
import select
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_PR_SET_PDEATHSIG = 1
_PR_SET_SECCOMP = 22
_PR_SET_NO_NEW_PRIVS = 38
_SECCOMP_MODE_FILTER = 2
_MS_NOSUID, _MS_NODEV, _MS_REC, _MS_PRIVATE = 0x2, 0x4, 0x4000, 0x40000
_libc = ctypes.CDLL(None, use_errno=True)


def main() -> None:
    """Set up, fork, supervise in the parent, run the solution and its tests in the child."""
    config = dict(argument.split("=", 1) for argument in sys.argv[1:])
    codes = {key[5:]: int(value) for key, value in config.items() if key.startswith("exit_")}
    # The token arrives on stdin so that it is in neither /proc/<pid>/cmdline nor environ.
    token = sys.stdin.buffer.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        sources = []
        for name in ("solution.py", "tests.py"):
            with open(name, encoding="utf-8") as handle:
                sources.append(handle.read())
            os.unlink(name)  # the solution must not read the tests
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _unshare(config)
        child = os.fork()
    except (OSError, ValueError) as exc:
        _setup_failed(codes, exc)
    if child:
        _supervise(child, float(config["timeout_s"]), int(config["cpu_s"]), codes)
    try:
        _confine(config)
    except (OSError, ValueError) as exc:
        _setup_failed(codes, exc)
    _run(sources[0], sources[1], config["entry_point"] or None, token, codes)


def _setup_failed(codes: dict[str, int], what: object) -> NoReturn:
    os.write(2, f"[sandbox] set-up failed: {what}\n".encode())
    os._exit(codes["setup"])


def _libc_call(name: str, *args: int) -> None:
    if getattr(_libc, name)(*args) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{name}: {os.strerror(errno)}")


def _unshare(config: dict[str, str]) -> None:
    """New namespaces for the child to come (a PID namespace takes effect at the next fork)."""
    flags = int(config["namespaces"])
    if config["userns"] == "1":
        uid, gid = os.getuid(), os.getgid()
        _libc_call("unshare", flags | _CLONE_NEWUSER)
        # Map our own ids onto themselves so that files the child creates keep a valid owner.
        for file, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{file}", "w") as handle:
                handle.write(text)
    elif flags:
        _libc_call("unshare", flags)
    if flags & _CLONE_NEWNS:
        _private_folders(config)


def _private_folders(config: dict[str, str]) -> None:
    """A sized tmpfs of its own over each shared writable folder and over the working folder, seen by
    this mount namespace only."""
    # Mounts must not propagate back to the host's namespace (a shared "/" would carry them there).
    if _libc.mount(None, b"/", None, ctypes.c_ulong(_MS_REC | _MS_PRIVATE), None) != 0:
        _mount_failed("/")
    size = int(config["tmpfs_bytes"])
    if size <= 0:
        raise ValueError(f"tmpfs_bytes must be positive, got {size}")  # size=0 is unlimited to tmpfs
    for folder in filter(None, config["private"].split(":")):
        folder = os.path.realpath(folder)  # /var/lock is often a link to /run/lock
        if os.path.isdir(folder):
            _mount_tmpfs(folder, f"size={size},mode=1777")
    workdir = os.getcwd()  # the host's folder: its sources are read and gone; a tmpfs takes its place
    old_mask = os.umask(0o022)
    try:
        os.makedirs(workdir, exist_ok=True)  # it vanished when the folder that holds it got a tmpfs
    finally:
        os.umask(old_mask)
    owner = f",uid={config['uid']},gid={config['uid']}" if config["uid"] else ""
    _mount_tmpfs(workdir, f"size={size},mode=0700{owner}")
    os.chdir(workdir)


def _mount_tmpfs(folder: str, options: str) -> None:
    flags = ctypes.c_ulong(_MS_NOSUID | _MS_NODEV)
    if _libc.mount(b"tmpfs", os.fsencode(folder), b"tmpfs", flags, options.encode()) != 0:
        _mount_failed(folder)


def _mount_failed(folder: str) -> NoReturn:
    errno = ctypes.get_errno()
    raise OSError(errno, f"mount tmpfs on {folder}: {os.strerror(errno)}")


def _supervise(child: int, timeout_s: float, cpu_s: int, codes: dict[str, int]) -> NoReturn:
    """Wait for the child with the wall clock, then leave the way it left."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(child)
    except (AttributeError, OSError):
        pidfd = -1
    while True:
        done, status, usage = os.wait4(child, os.WNOHANG)
        if done:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(child, signal.SIGKILL)  # as PID 1 of its namespace, it takes all the others along
            os.waitpid(child, 0)
            os._exit(codes["timeout"])
        if pidfd >= 0:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.02))
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    died_of = os.WTERMSIG(status)
    # RLIMIT_CPU has soft = hard, so the kernel sends SIGKILL (a PID-namespace init ignores SIGXCPU).
    # rusage times are tick-sampled and read low, by up to a fifth on a busy virtual machine (a child
    # killed at its 1 s limit reported 0.83 s): a SIGKILL after three quarters of the limit is the limit.
    if died_of in (signal.SIGKILL, signal.SIGXCPU) and usage.ru_utime + usage.ru_stime >= 0.75 * cpu_s - 0.05:
        os._exit(codes["cpu"])
    try:  # not contextlib.suppress, which would cost an import
        signal.signal(died_of, signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL and SIGSTOP cannot be handled, and need not be
    os.kill(os.getpid(), died_of)
    os._exit(128 + died_of)


def _confine(config: dict[str, str]) -> None:
    """rlimits, the run's uid, and no way back to more privilege."""
    uid = int(config["uid"]) if config["uid"] else None
    if uid is not None:
        _keep_library_reachable()
    cpu = int(config["cpu_s"])
    for limit, value in (
        (resource.RLIMIT_CPU, (cpu, cpu)),
        (resource.RLIMIT_AS, (int(config["memory_bytes"]),) * 2),
        (resource.RLIMIT_FSIZE, (int(config["file_size_bytes"]),) * 2),
        (resource.RLIMIT_NOFILE, (int(config["nofile"]),) * 2),
        (resource.RLIMIT_NPROC, (int(config["max_procs"]),) * 2),
    ):
        resource.setrlimit(limit, value)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        if os.geteuid() != uid or os.getegid() != uid:
            raise OSError(f"still running as uid {os.geteuid()} gid {os.getegid()}, not {uid}")
    _libc_call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)  # setuid binaries stay unprivileged
    # After setuid, because a change of credentials clears the parent-death signal.
    _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if config["seccomp"]:
        install_filter(bytes.fromhex(config["seccomp"]))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(program: bytes) -> None:
    """Install the seccomp BPF ``program`` (``struct sock_filter`` array) on this process and all it will
    start; NO_NEW_PRIVS must be set already. OSError when the kernel refuses it: the run must not go on."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    mode = ctypes.c_ulong(_SECCOMP_MODE_FILTER)
    if _libc.prctl(_PR_SET_SECCOMP, mode, ctypes.byref(fprog), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"seccomp filter refused by the kernel: {os.strerror(errno)}")


def _keep_library_reachable() -> None:
    """The interpreter may live where the run's uid cannot look (``/root/.pyenv``): reach its library
    through directory descriptors opened while still privileged (``/proc/self/fd/N`` resolves for the
    process itself whatever its uid)."""
    moved = {
        entry: f"/proc/self/fd/{os.open(entry, os.O_RDONLY | os.O_DIRECTORY)}"
        for entry in sys.path
        if os.path.isdir(entry)
    }

    def rebase(path: str) -> str:
        for old, new in moved.items():
            if path == old or path.startswith(old + os.sep):
                return new + path[len(old) :]
        return path

    sys.path[:] = list(moved.values())
    for module in list(sys.modules.values()):
        paths = getattr(module, "__path__", None)
        if isinstance(paths, list):  # packages already imported look their submodules up here
            paths[:] = [rebase(path) for path in paths]
    sys.path_importer_cache.clear()


def _run(solution: str, tests: str, entry_point: str | None, token: bytes, codes: dict[str, int]) -> NoReturn:
    """Execute the solution, then the tests, in one namespace; write the token only if all of it ran."""
    # Our own references: the solution may patch builtins, os or sys before the tests run.
    out = os.dup(1)
    write, exit_, execute, compile_ = os.write, os._exit, builtins.exec, builtins.compile
    settrace, setprofile = sys.settrace, sys.setprofile
    namespace: dict[str, Any] = {"__name__": "solution", "__builtins__": builtins}

    def finish(code: int, exc: BaseException | None, note: str = "") -> NoReturn:
        try:
            if exc is not None:
                tb = exc.__traceback__
                while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
                    tb = tb.tb_next  # the solution's frames only
                import linecache  # only now: a failure's output may wait for these, a pass need not
                import traceback

                for filename, source in (("solution.py", solution), ("tests.py", tests)):
                    # The files are gone; this shows their lines in the traceback all the same.
                    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
                traceback.print_exception(type(exc), exc, tb)
            if note:
                sys.stderr.write(f"[sandbox] {note}\n")
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:
            pass
        exit_(code)

    def guarded(step: Callable[[], object], assertion_code: int) -> None:
        try:
            step()
        except AssertionError as exc:
            finish(assertion_code, exc)
        except MemoryError as exc:
            finish(codes["oom"], exc)
        except SystemExit as exc:
            finish(codes["error"], None, f"exit({exc.code!r}) called before the tests finished")
        except BaseException as exc:
            finish(codes["error"], exc)

    def load(source: str, filename: str) -> Callable[[], object]:
        # optimize=0 keeps the asserts whatever flags the interpreter was given.
        return lambda: execute(compile_(source, filename, "exec", dont_inherit=True, optimize=0), namespace)

    guarded(load(solution, "solution.py"), codes["error"])
    if entry_point is not None and not callable(namespace.get(entry_point)):
        finish(codes["error"], None, f"the solution defines no function {entry_point!r}")
    settrace(None)
    setprofile(None)
    check_before = namespace.get("check")
    guarded(load(tests, "tests.py"), codes["fail"])
    check = namespace.get("check")
    if callable(check) and check is not check_before:
        if entry_point is None:
            finish(codes["error"], None, "the tests define check(candidate) but no entry_point was given")
        guarded(lambda: check(namespace[entry_point]), codes["fail"])
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    write(out, b"\n" + token + b"\n")
    exit_(0)


if __name__ == "__main__":
    main()
