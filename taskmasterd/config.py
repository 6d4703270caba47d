"""Parse and validate the YAML configuration into frozen dataclasses.

Validation walks PyYAML's *node tree*, not the loaded Python objects, so that
every error carries file:line:column and so that YAML 1.1 resolution cannot
bite: `umask: 022` is read as the digits written, `env: {A: 042}` keeps the
string "042", and `stdout: null` (written) is told apart from an absent key.

No I/O here except reading the file and those it includes (`taskmasterd:
{include: ...}`, taskmasterd.includes); no apprise, no asyncio, no D-Bus.
This module is Taskmaster's schema as told to its users (below) and its
entry points. The top level, `taskmasterd:` and the includes are read in
`taskmasterd.configschema`, into the model of `taskmasterd.configmodel`;
`programs:` in `taskmasterd.programschema` (ProgramConfig and its key
table), `alerts:` in `taskmasterd.alertschema`; composing the file, locating
issues, merge keys and the generic scalar readers are in
`taskmasterd.yamlnodes`.

Entry points: `load_config(path)` reads a file, `parse_config(text, path)`
validates text said to come from `path`. Both return a `Config` or raise
`ConfigError` carrying *every* problem found (not just the first), each a
`ConfigIssue` with file, line, column, keypath and a message.

How values are read (the node's source text decides, never YAML 1.1):

* integers (numprocs, startretries, startlimit_burst, exitcodes): unquoted decimal digits,
  optionally with a leading "-" (so that a negative value gets a range
  message). Leading zeros do not make them octal: `exitcodes: 010` is 10.
  A quoted number ("2") is an error.
* seconds (starttime, stoptime, restartdelay, startlimit_interval, alert rate): unquoted decimal numbers
  such as 5, 0.5 or 10.; no exponent, no .inf/.nan; 0 to 86400.
* sizes (stdout_maxbytes, stderr_maxbytes): as supervisord writes them,
  digits with an optional KB, MB or GB suffix (any case, 1024-based, quoted
  or not): 1048576, 1MB and "1 mb" are the same; 0 = unlimited; at most 1024GB.
* umask: the octal digits written, quoted or not, with an optional 0o
  prefix: 022, 22, "022", '0o22', 0o22 and 0022 all mean 0o22. 18 is an
  error (not octal), so is anything above 0777.
* booleans (autostart; autorestart also takes them): exactly true, false,
  yes, no, on, off in any case, quoted or not. Nothing else (not y/n, not
  1/0).
* strings (cmd, user, alert program patterns): any non-null scalar, as
  written, so `cmd: true` runs /bin/true and `user: 1000` is the uid
  "1000". Paths (workingdir, stdout, stderr, logfile, logdir, statedir) and
  alert URLs must be YAML strings: an unquoted number, boolean or date is
  an error (quote it). Relative paths are resolved against the directory
  of the config file (os.path.normpath, no symlink resolution).
* stdout/stderr: absent -> AUTO; `null`, `~`, an empty value or the string
  /dev/null -> NULL; the exact string `journal` -> JOURNAL (write
  ./journal for a file of that name); any other string -> FILE.
* env values: the scalar's source text ("42", "022", "on", "1.50");
  a null value is an error (write '' for an empty value).
* variables `%{name}` (taskmasterd.variables) in cmd, env values,
  workingdir, stdout and stderr: expanded first, then the value is split
  (cmd) or resolved (paths; `journal` only as written); `%%{` is a
  literal `%{`, any other `%` is literal. env.NAME, program, numprocs,
  here (the defining file's directory) and host at load; process and
  process_num stay markers that spawn.launch_spec fills per process. An
  unknown name or an unset env.NAME is an error at the value.
* redirect_stderr: a boolean; stderr goes where stdout goes, and a
  `stderr:` of the same program is an error (taskmasterd.redirectschema).
* after (start ordering, taskmasterd.deps): a program name or a list of
  them, each any non-null scalar as written (`after: [1]` names program
  "1"); `[]` is none. Checked across programs once all are read: an
  unknown name, a name listed twice, a program after itself and each cycle
  are errors at the item (a cycle at the item that closes it, with its path).
* include (taskmasterd.includes): a path or glob, or a list of them,
  relative to the main file's directory. Each file named is read (each
  once, at most MAX_INCLUDED_FILES, each a regular file of MAX_FILE_SIZE
  at most and MAX_INCLUDED_SIZE in all) by a validator of its own, so that
  its issues and relative paths are its own; it may hold programs and
  alerts only. Then the checks across programs see every file: a program
  defined twice is an error at the second definition naming both places,
  and after: names any program of the tree. Every issue of every file is
  raised at once (the main file's first, then each file's in the order
  read); Config.files says which files were read and what each defined.
* the top-level sections taskmasterd, programs, alerts and tasks may be left
  empty (null), which means the same as absent.
* tasks (one-shot tasks, taskmasterd/tasks): max_parallel an integer
  1–4096; keep a number of days > 0 (fractions allowed, at most 36600);
  timeout seconds >= 0 up to a year (0: none); stopsignal and stoptime as
  a program's; max_queued an integer 1–1000000 (default 10000).
* alerts (taskmasterd.alertschema, whose reader the validator inherits):
  a URL is checked for its syntax here (scheme://...) and keeps its place
  in the file; whether apprise can use it is asked by the daemon's loader
  once the file is valid (hostcheck.load -> alerts.urls), an error at the
  same place. Alert title/body templates (any non-null scalar) are
  str.format strings whose fields must be named and among TEMPLATE_FIELDS.

Aliases are fine anywhere, and merge keys (`<<: *defaults`, or a list of
aliases) work in every mapping: keys written in the mapping win over merged
ones, and among merged mappings the first listed wins (as in YAML). A key
written twice in one mapping is an error at the second occurrence.
"""


from __future__ import annotations

import os
from pathlib import Path

# Re-exported: the models, the key lists and the loader's errors are part of this module's API.
from taskmasterd.alertschema import ALERT_EVENTS as ALERT_EVENTS
from taskmasterd.alertschema import DEFAULT_ALERT_RATE as DEFAULT_ALERT_RATE
from taskmasterd.alertschema import TEMPLATE_FIELDS as TEMPLATE_FIELDS
from taskmasterd.alertschema import AlertConfig as AlertConfig
from taskmasterd.configmodel import LOG_LEVELS as LOG_LEVELS
from taskmasterd.configmodel import Config as Config
from taskmasterd.configmodel import ConfigFile as ConfigFile
from taskmasterd.configmodel import GlobalConfig as GlobalConfig
from taskmasterd.configread import MAX_FILE_SIZE as MAX_FILE_SIZE
from taskmasterd.configread import Unreadable, decode, read_file
from taskmasterd.configschema import GLOBAL_KEYS as GLOBAL_KEYS
from taskmasterd.configschema import TOP_KEYS as TOP_KEYS
from taskmasterd.configschema import Validator
from taskmasterd.programschema import DEFAULT_BACKUPS as DEFAULT_BACKUPS
from taskmasterd.programschema import DEFAULT_MAXBYTES as DEFAULT_MAXBYTES
from taskmasterd.programschema import LAUNCH_KEYS as LAUNCH_KEYS
from taskmasterd.programschema import MAX_BACKUPS as MAX_BACKUPS
from taskmasterd.programschema import MAX_MAXBYTES as MAX_MAXBYTES
from taskmasterd.programschema import PROGRAM_KEYS as PROGRAM_KEYS
from taskmasterd.programschema import AutoRestart as AutoRestart
from taskmasterd.programschema import Output as Output
from taskmasterd.programschema import OutputKind as OutputKind
from taskmasterd.programschema import ProgramConfig as ProgramConfig
from taskmasterd.programschema import parse_size as parse_size
from taskmasterd.yamlnodes import ConfigError as ConfigError
from taskmasterd.yamlnodes import ConfigIssue as ConfigIssue


def load_config(path: str | Path) -> Config:
    """Read and validate `path` and the files it includes; raise ConfigError
    with all issues of all files at once."""
    name = os.fspath(path)
    try:
        data = read_file(name)
    except Unreadable as e:
        raise ConfigError([ConfigIssue(name, 1, 1, "", f"cannot read the config file: {e}")]) from None
    return parse_config(decode(data, name), name)


def parse_config(text: str, path: str) -> Config:
    """Validate `text`, said to be the contents of `path`.

    `path` is used as written in issues; relative paths in the file are
    resolved against its directory, and so are its include patterns (the
    files they name are read). Raise ConfigError with every issue.
    """
    try:
        return Validator(text, path).run()
    except RecursionError:
        # The last resort: composing caps nesting (yamlnodes.MAX_DEPTH) and the
        # walks are bounded, so this is a structure nothing else foresaw.
        raise ConfigError([ConfigIssue(
            path, 1, 1, "", "the file is nested too deeply to be read (anchors, aliases "
            "and merge keys more than a few hundred levels deep); simplify it")]) from None
