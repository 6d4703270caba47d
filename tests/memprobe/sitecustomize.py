"""What a daemon under test holds, at Python level, on request.

On the PYTHONPATH of a taskmasterd started with MEMPROBE_OUT=FILE: SIGUSR1
makes it collect garbage and write {"blocks": …, "objects": …} to FILE
(sys.getallocatedblocks(), len(gc.get_objects())). Unlike RSS, these count
what the daemon keeps, not how glibc's heap happens to be laid out after
some huge messages (see tests/fuzz/test_dbus_fuzz.py), so a leak check on
them is exact. Only `python -m taskmasterd` installs it: its runners and
log writers never see the signal.
"""

import gc
import json
import os
import signal
import sys

_out = os.environ.get("MEMPROBE_OUT", "")
if _out and sys.orig_argv[1:3] == ["-m", "taskmasterd"]:
    def _dump(signum: int, frame: object) -> None:
        gc.collect()
        with open(_out + ".tmp", "w") as f:
            json.dump({"blocks": sys.getallocatedblocks(), "objects": len(gc.get_objects())}, f)
        os.replace(_out + ".tmp", _out)

    signal.signal(signal.SIGUSR1, _dump)
