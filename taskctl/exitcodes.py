"""taskctl's exit codes (LSB / supervisorctl, plus timeout(1)'s 124).

0 ok, 1 error, 2 bad usage, 3 `status`: a shown process is not RUNNING,
4 no such program, 7 daemon unreachable, 124 gave up waiting (--timeout),
130 interrupted.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_NO_SUCH = 4
EXIT_UNREACHABLE = 7
EXIT_TIMEOUT = 124  # start/stop/restart: still not settled after --timeout
EXIT_INTERRUPTED = 130
