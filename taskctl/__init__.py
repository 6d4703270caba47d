"""taskctl: control taskmasterd over D-Bus (commands and an interactive shell).

- `taskctl.client`: the D-Bus client (`Client`: the Manager's calls; its
  connection and typed errors in `taskctl.link`, its events in
  `taskctl.subscriber`).
- `taskctl.cli`: the command line (`main`), output and exit codes (pure parts).
- `taskctl.shell`: the interactive shell (`run_shell`), also run by
  `taskmasterd --shell` in a thread.
- `taskctl.model`: the plain values and errors the others share.
"""
