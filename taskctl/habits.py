"""supervisorctl's words that taskctl understands from habit (update, reread,
avail, maintail): each does the thing, after saying once on stderr what
Taskmaster calls it (once per process: the shell says it at the first use).
The words it does not run (fg, add, remove, clear, version) are answered
with what to do instead (`ELSEWHERE`).
"""

from __future__ import annotations

from typing import TextIO

# word -> what it is here (said on stderr before it runs)
NOTES = {
    "update": "supervisorctl's 'update' is 'taskctl reload' here",
    "reread": "supervisorctl's 'reread' is 'taskctl reload --dry-run' here (nothing is applied)",
    "avail": "supervisorctl's 'avail': 'taskctl status' shows the processes, 'taskctl reload "
             "--dry-run' what the file would add",
    "maintail": "supervisorctl's 'maintail': taskmasterd's own log (its lifecycle log file, "
                "or the journal: journalctl -t taskmasterd); 'taskctl history all' shows its "
                "events as a table",
}
# The command of ours each word runs as (for the parser and `help`).
SAME_AS = {"update": "reload", "reread": "reload --dry-run"}
# supervisorctl's words that taskctl does not run: what to do instead, said
# in place of argparse's list of choices (a usage error: exit 2).
ELSEWHERE = {
    "fg": "supervisorctl's 'fg' is 'taskctl attach PROCESS' here: a program with "
          "'console: true' runs on a terminal you attach to and detach from (Ctrl-] d), "
          "and it keeps running",
    "add": "supervisorctl's 'add' is 'taskctl reload' here: it starts what the file added "
           "('taskctl reload --dry-run' shows it first)",
    "remove": "supervisorctl's 'remove' is 'taskctl reload' here: it stops and forgets what "
              "the file no longer has ('taskctl reload --dry-run' shows it first)",
    "clear": "supervisorctl's 'clear' has no equivalent: taskmasterd does not empty log "
             "files; they rotate at stdout_maxbytes/stderr_maxbytes, and 'taskctl tail "
             "PROCESS' shows their end",
    "version": "supervisorctl's 'version' is 'taskctl --version' here",
}

_said: set[str] = set()


def say_once(word: str, err: TextIO) -> None:
    """The note of `word` on `err`, the first time only."""
    if word in NOTES and word not in _said:
        _said.add(word)
        err.write(f"taskctl: ({NOTES[word]})\n")
        err.flush()
