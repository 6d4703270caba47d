"""Credentials in a configuration file anyone can read (issue 11, 5.).

The rule (README, "Secrets"): a configuration holds credentials when
- an `alerts:` URL has a part that apprise hides when it shows the URL (a
  password, a token, a key: `mailto://user:PASS@host`, `tgram://TOKEN/chat`,
  `json://host/?token=...`), the parts `alerts.secrets_of` already masks in
  the logs; or
- a program's `env:` has a variable whose name says it is one: it contains
  PASSWORD, PASSWD, SECRET, TOKEN or CREDENTIAL, or ends in KEY.
Any user can read the file when "other" may read it and may search every
directory above it (a 0644 file in a 0750 directory is not exposed).

Pure but for `os.stat`: the daemon logs the warning (at start and on reload).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

from taskmasterd.config import Config

SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|KEY$", re.IGNORECASE)


def readable_by_anyone(path: str) -> bool:
    """True when a user outside the file's owner and group can read `path`."""
    try:
        if not os.stat(path).st_mode & stat.S_IROTH:
            return False
        directory = os.path.dirname(os.path.realpath(path))
        while True:
            if not os.stat(directory).st_mode & stat.S_IXOTH:
                return False
            parent = os.path.dirname(directory)
            if parent == directory:
                return True
            directory = parent
    except OSError:
        return False


def credentials(config: Config, alert_has_secret: Sequence[bool]) -> list[str]:
    """Where `config` holds credentials, as key paths (never the values).

    `alert_has_secret[i]`: whether apprise hides a part of alert i's URL."""
    found = [f"alerts[{i}].url" for i, secret in enumerate(alert_has_secret) if secret]
    for program in config.programs:
        found += [f"programs.{program.name}.env.{name}" for name, _ in program.env
                  if SECRET_NAME.search(name)]
    return found


def exposure_warning(config: Config, alert_has_secret: Sequence[bool]) -> str | None:
    """The warning to log when `config.path` holds credentials anyone can read, else None."""
    where = credentials(config, alert_has_secret)
    if not where or not readable_by_anyone(config.path):
        return None
    shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
    try:
        mode = stat.S_IMODE(os.stat(config.path).st_mode)
    except OSError:
        return None
    return (f"{config.path} holds credentials ({shown}) and any user can read it (mode "
            f"{mode:04o}): chmod o-r it (the Debian package installs it 0640 root:taskmaster)")
