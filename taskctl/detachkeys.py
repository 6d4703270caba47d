"""`taskctl attach`'s detach keys: docker's syntax for them, and the filter
that finds them in what is typed (pure: bytes in, bytes out).

A sequence is comma-separated keys, each `ctrl-X` (X in a-z, @, [, \\, ], ^,
_) or one printable character: `ctrl-],d` (the default), `ctrl-p,ctrl-q`,
`ctrl-a,d`. Its first key is a prefix, as tmux's: typed twice it sends one
literal prefix to the program; followed by a key that is not the next one of
the sequence, both go through. So the prefix is never lost to the program,
and nothing is held back longer than the sequence being typed.
"""

from __future__ import annotations

DEFAULT = "ctrl-],d"
ENV = "TASKCTL_DETACH_KEYS"  # the environment's default, in the same syntax
CTRL_KEYS = "abcdefghijklmnopqrstuvwxyz@[\\]^_"  # Ctrl-X is X's code & 0x1f


def parse(text: str) -> bytes:
    """The bytes of a detach sequence; ValueError says what is wrong (the
    key and where it is), in words for a usage error."""
    if not text:
        raise ValueError("empty detach keys; expected keys like ctrl-],d or ctrl-p,ctrl-q")
    keys = bytearray()
    for i, key in enumerate(text.split(","), 1):
        where = f"key {i} of {text!r}"
        if not key:
            raise ValueError(f"{where} is empty (keys are separated by one comma)")
        if len(key) == 1:
            if not 0x20 <= ord(key) < 0x7f:
                raise ValueError(f"{where}, {key!r}, is not a printable ASCII character; "
                                 "use ctrl-X for a control key")
            keys.append(ord(key))
            continue
        prefix, x = key[:5], key[5:]
        if prefix.lower() != "ctrl-" or len(x) != 1 or x.lower() not in CTRL_KEYS:
            raise ValueError(f"{where}, {key!r}, is neither ctrl-X (X one of a-z @ [ \\ ] ^ _) "
                             "nor a single printable character")
        keys.append(ord(x.upper()) & 0x1f)
    return bytes(keys)


def describe(keys: bytes) -> str:
    """How a person reads the sequence: `Ctrl-] d`, `Ctrl-P Ctrl-Q`."""
    words = []
    for b in keys:
        if b < 0x20:
            words.append("Ctrl-" + chr(b | 0x40))
        elif b == 0x20:
            words.append("Space")
        else:
            words.append(chr(b))
    return " ".join(words)


class DetachFilter:
    """Finds the detach sequence in the keystrokes, across reads.

    `feed(data)` returns what to send to the program now and whether the
    sequence was completed (what followed it in `data` is dropped: typed
    after leaving). Bytes that may begin the sequence are held until the
    next key says whether they do."""

    def __init__(self, keys: bytes) -> None:
        if not keys:
            raise ValueError("no detach keys")
        self.keys = keys
        self.matched = 0  # keys of the sequence typed so far (held back)

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        keys, prefix = self.keys, self.keys[0]
        out = bytearray()
        i, n = 0, len(data)
        while i < n:
            if self.matched == 0:
                # no sequence under way: everything up to the next prefix at once
                j = data.find(prefix, i)
                if j < 0:
                    out += data[i:]
                    break
                out += data[i:j]
                self.matched, i = 1, j + 1
            else:
                b = data[i]
                i += 1
                if b == keys[self.matched]:
                    self.matched += 1
                elif self.matched == 1 and b == prefix:
                    out.append(prefix)  # the prefix twice: one literal prefix (tmux's send-prefix)
                    self.matched = 0
                else:
                    out += keys[:self.matched]  # not the sequence: what was held goes through
                    self.matched = 0
                    if b == prefix:
                        self.matched = 1  # ... and this may begin it again
                    else:
                        out.append(b)
            if self.matched == len(keys):
                self.matched = 0
                return bytes(out), True
        return bytes(out), False

    def pending(self) -> bytes:
        """What is held back now (a partial sequence)."""
        return self.keys[:self.matched]
