"""A raw D-Bus client that sends taskmasterd seeded random method calls.

Run as `python -m tests.fuzz.dbus_fuzz_client ADDRESS SEED COUNT [tasks]` (the
test runs it as root and, through setpriv, as uid 65534). With `tasks`, the
calls are the task API's (TaskFuzzer): SubmitTask, SubmitActivity, the
cancels, the lists, the Task and Activity objects; the ids of the tasks it
queued are in the report (`queued`), for the test to compare with the disk. It prints one JSON
object: how many calls were sent, the replies by kind and error name, and
every reply that breaks the contract (an `.Failed` error, a library
ServiceError, or any text holding a traceback).

jeepney builds each message from an explicit signature, so ill-typed calls
(wrong signature for the method, extra or missing arguments) really reach
the daemon; dbus-daemon itself drops the connection of a client that sends
an invalid message (a NUL in a string, a malformed object path): that is
counted as `kicked` and the client reconnects.
"""

from __future__ import annotations

import collections
import json
import random
import sys
from typing import Any

from jeepney import DBusAddress, HeaderFields, MessageType, new_method_call
from jeepney.io.blocking import DBusConnection, open_dbus_connection

NAME = "org.taskmaster.Taskmaster1"
ROOT = "/org/taskmaster/Taskmaster1"
MANAGER = "org.taskmaster.Taskmaster1.Manager"
PROGRAM = "org.taskmaster.Taskmaster1.Program"
PROPS = "org.freedesktop.DBus.Properties"

# (interface, member, signature) as declared; Shutdown only with a wrong
# signature (the right one legitimately stops the daemon).
MANAGER_METHODS = [("Start", "s"), ("Stop", "s"), ("Restart", "s"), ("Signal", "ss"),
                   ("Reload", ""), ("ListProcesses", ""), ("OpenLog", "ss"), ("TestAlerts", "s"),
                   ("PlanReload", ""), ("PlanReloadReasons", ""), ("PlanReloadSettings", "")]
PROGRAM_METHODS = [("Start", ""), ("Stop", ""), ("Restart", ""), ("Signal", "s")]
OTHER = [("org.freedesktop.DBus.Introspectable", "Introspect", ""),
         ("org.freedesktop.DBus.Peer", "Ping", ""),
         ("org.freedesktop.DBus.ObjectManager", "GetManagedObjects", ""),
         (PROPS, "Get", "ss"), (PROPS, "GetAll", "s"), (PROPS, "Set", "ssv")]

TARGETS = ["web", "web:0", "web:1", "web:2", "db", "lazy", "all", "*", "w*", "web-*", "nope", "web:",
           ":0", "web:-1", "web:99999999999999999999", "[", "**", "ALL", "Web", "web:0:0", " web"]
SIGNALS = ["TERM", "HUP", "USR1", "sigusr2", "SIGCONT", "CONT", "0", "9", "15", "-1", "65",
           "999999999999999999999", "\u0669", "\uff19", "SIGFOO", "KILL", "INT", "1e3", " TERM "]
STREAMS = ["stdout", "stderr", "journal", "STDOUT", "both", "", "../stdout"]
PROPERTIES = ["Version", "State", "ConfigFile", "Name", "Command", "NumProcs", "Processes", "Nope", ""]
IFACES = [MANAGER, PROGRAM, PROPS, "org.freedesktop.DBus.Peer", "org.example.Nope", ""]
PATHS = [ROOT, f"{ROOT}/program/web", f"{ROOT}/program/db", f"{ROOT}/program/lazy",
         f"{ROOT}/program/nope", f"{ROOT}/program/_2e", f"{ROOT}/program", f"{ROOT}/program/web/x",
         "/", "/org/taskmaster", f"{ROOT}/task/1"]
TASK = "org.taskmaster.Taskmaster1.Task"
ACTIVITY = "org.taskmaster.Taskmaster1.Activity"
TASK_KEYS = ["command", "args", "env", "workingdir", "timeout", "user", "activity", "name"]
# The D-Bus type each key takes (timeout: any of these numbers).
TASK_TYPES = {"command": "s", "args": "as", "env": "a{ss}", "workingdir": "s", "timeout": "d",
              "user": "s", "activity": "s", "name": "s"}
TASK_METHODS = [("SubmitTask", ["a{sv}"]), ("SubmitActivity", ["s", "aa{sv}"]),
                ("CancelTask", ["s"]), ("CancelActivity", ["s"]), ("ListTasks", []),
                ("ListActivities", [])]
TASK_PROPERTIES = ["Id", "Name", "State", "Activity", "Command", "Args", "WorkingDirectory", "Pid",
                   "ExitCode", "Signal", "SpawnError", "Reason", "Timeout", "SubmittedAt",
                   "StartedAt", "EndedAt", "Directory", "Tasks", "FailedTask", "Nope", ""]
NOT_IDS = ["", "0", "3df2bb2", "3DF2BB24", "3df2bb24", "ffffffff", "../tasks", "cli", "a" * 33,
           "x" * 5000, "é" * 8, "00000000/..", " 3df2bb24", "%s", "\n"]
BAD_PATHS = ["", "//", "/a/", "relative", "/a-b", "/\u00e9"]  # the bus refuses these


class Fuzzer:
    def __init__(self, address: str, seed: int) -> None:
        self.address = address
        self.rng = random.Random(seed)
        self.conn: DBusConnection | None = None
        self.replies: collections.Counter[str] = collections.Counter()
        # member -> calls that reached the daemon's own handler (a return or a Taskmaster error)
        self.handled: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []
        self.sent = 0
        self.kicked = 0

    # ---- values

    def text(self) -> str:
        r = self.rng
        pick = r.random()
        if pick < 0.45:
            return r.choice(TARGETS + SIGNALS + STREAMS + PROPERTIES)
        if pick < 0.6:  # random unicode, no surrogates (not encodable)
            return "".join(chr(r.choice([r.randrange(0x20, 0x7f), r.randrange(0xa0, 0xd800),
                                         r.randrange(0xe000, 0x110000)]))
                           for _ in range(r.randrange(0, 20)))
        if pick < 0.75:
            return r.choice(["x" * 4096, "x" * 4097, "\u00e9" * 2049, "w" * r.randrange(0, 300_000)])
        if pick < 0.8:
            return "a\0b"  # invalid in D-Bus: the bus drops us
        return ""

    def value(self, code: str) -> Any:
        r = self.rng
        if code == "s":
            return self.text()
        if code == "o":
            return r.choice(PATHS)
        if code == "g":
            return r.choice(["", "s", "a{sv}", "(ii)"])
        if code == "b":
            return r.random() < 0.5
        if code in "nqiuxty":
            bits = {"y": 8, "n": 16, "q": 16, "i": 32, "u": 32, "x": 64, "t": 64}[code]
            lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if code in "nix" else (0, 2**bits - 1)
            return r.choice([lo, hi, 0, 1, r.randint(lo, hi)])
        if code == "d":
            return r.choice([0.0, -1.5, 1e308, float("inf"), float("nan")])
        if code == "as":
            return [self.text() for _ in range(r.choice([0, 1, 3, 1000]))][:1000]
        if code == "ay":
            return bytes(r.randrange(256) for _ in range(r.choice([0, 10, 5000])))
        if code == "a{sv}":
            return {self.text(): ("s", self.text()) for _ in range(r.randrange(3))}
        if code == "aa{sv}":
            return [self.value("a{sv}") for _ in range(r.randrange(3))]
        if code == "v":
            return r.choice([("s", self.text()), ("u", 7), ("as", ["a"]), ("b", True)])
        if code == "(ss)":
            return (self.text(), self.text())
        raise AssertionError(code)

    def signature(self, declared: str | list[str]) -> list[str]:
        """The declared types (well-typed) or something else (ill-typed)."""
        r = self.rng
        if r.random() < 0.55:
            return list(declared)
        codes = ["s", "o", "g", "b", "y", "i", "u", "x", "t", "d", "as", "ay", "a{sv}", "v", "(ss)"]
        choice = r.random()
        if choice < 0.3 and declared:  # one argument short
            return list(declared[:-1])
        if choice < 0.5:  # one too many
            return [*declared, r.choice(codes)]
        return [r.choice(codes) for _ in range(r.randrange(0, 4))]

    # ---- calls

    def call(self, path: str, iface: str, member: str, codes: list[str]) -> None:
        self.send(path, iface, member, "".join(codes), tuple(self.value(c) for c in codes))

    def send(self, path: str, iface: str, member: str, codes: str,
             body: tuple[Any, ...]) -> Any:
        try:
            msg = new_method_call(DBusAddress(path, bus_name=NAME, interface=iface or None), member,
                                  codes, body)
            msg.serialise(serial=1)  # a value of the wrong type for its signature: not sent
        except Exception as exc:  # jeepney refused to build it: not sent
            self.replies[f"unsendable:{type(exc).__name__}"] += 1
            return None
        if self.conn is None:
            self.conn = open_dbus_connection(bus=self.address, enable_fds=True)
        self.sent += 1
        try:
            reply = self.conn.send_and_get_reply(msg, timeout=30)
        except (ConnectionError, OSError, EOFError):
            self.kicked += 1
            self._reconnect()
            return None
        self.check(member, list(codes), reply)
        return reply

    def _reconnect(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def check(self, member: str, codes: list[str], reply: Any) -> None:
        for item in reply.body:  # close any fd OpenLog passed
            if hasattr(item, "close") and not isinstance(item, (str, bytes)):
                item.close()
        if reply.header.message_type == MessageType.error:
            name = reply.header.fields.get(HeaderFields.error_name, "?")
            self.replies[f"error:{name}"] += 1
            if name.startswith(NAME):
                self.handled[member] += 1
            text = str(reply.body[0]) if reply.body else ""
            if (name.endswith(".Failed") and name.startswith(NAME)) or "ServiceError" in name \
                    or "Traceback" in text or 'File "' in text:
                self.bad.append(f"{member}({''.join(codes)}) -> {name}: {text[:300]}")
        else:
            self.replies["ok"] += 1
            self.handled[member] += 1
            text = json.dumps(reply.body, default=repr)
            if "Traceback" in text:
                self.bad.append(f"{member}({''.join(codes)}) -> a reply holding a traceback")

    def one(self) -> None:
        r = self.rng
        pick = r.random()
        if pick < 0.5:
            member, declared = r.choice([*MANAGER_METHODS, ("Shutdown", "s"), ("Nope", "")])
            codes = self.signature(declared)
            if member == "Shutdown" and not codes:
                codes = ["s"]  # never the real Shutdown()
            self.call(ROOT if r.random() < 0.9 else r.choice(PATHS), MANAGER, member, codes)
        elif pick < 0.75:
            member, declared = r.choice(PROGRAM_METHODS)
            self.call(r.choice(PATHS[1:]), PROGRAM if r.random() < 0.9 else r.choice(IFACES),
                      member, self.signature(declared))
        elif pick < 0.97:
            iface, member, declared = r.choice(OTHER)
            if iface == PROPS and r.random() < 0.6:
                # mostly an object that has the interface asked for, so that the getters run
                path, target = r.choice([(ROOT, MANAGER), (f"{ROOT}/program/web", PROGRAM),
                                         (f"{ROOT}/program/lazy", PROGRAM)])
                args = {"Get": (target, r.choice(PROPERTIES)), "GetAll": (target,),
                        "Set": (target, r.choice(PROPERTIES), self.value("v"))}[member]
                self.send(path, PROPS, member, declared, args)
                return
            self.call(r.choice(PATHS), iface, member, self.signature(declared))
        else:
            self.call(r.choice(BAD_PATHS), MANAGER, "ListProcesses", [])

    def run(self, count: int) -> dict[str, Any]:
        while self.sent < count:
            self.one()
        self._reconnect()
        return {"sent": self.sent, "kicked": self.kicked, "replies": dict(self.replies),
                "handled": dict(self.handled), "bad": self.bad}


class TaskFuzzer(Fuzzer):
    """The task API with random and malicious values: wrong variant types,
    variants in variants, huge strings and arrays, NUL bytes (the bus drops
    us), unknown keys, ids that are not ids, objects that do not exist."""

    def __init__(self, address: str, seed: int) -> None:
        super().__init__(address, seed)
        self.tasks: list[str] = []  # ids SubmitTask returned
        self.activities: list[str] = []  # ids SubmitActivity returned

    def an_id(self, known: list[str]) -> str:
        r = self.rng
        return r.choice(known) if known and r.random() < 0.6 else r.choice(NOT_IDS)

    def wrong(self) -> tuple[str, Any]:
        """A variant of some type, often not the one the key takes."""
        r = self.rng
        return r.choice([
            ("u", 7), ("i", -1), ("x", -(2 ** 63)), ("t", 2 ** 64 - 1), ("b", True), ("y", 0),
            ("d", r.choice([float("nan"), float("inf"), -1.0, 1e308, 0.5])),
            ("s", self.text()), ("o", "/x"), ("g", "a{sv}"), ("ay", b"true\xff"),
            ("as", [self.text() for _ in range(r.choice([0, 2, 5000]))]),
            ("v", ("s", "true")), ("v", ("v", ("as", ["a"]))),
            ("a{sv}", {"command": ("s", "true")}), ("a{ss}", {"A": "b"}),
            ("a{ss}", {f"V{i}": "x" * 100 for i in range(r.choice([1, 2000]))}),
            ("(ss)", ("a", "b")), ("aas", [["a"], []]),
        ])

    def task_value(self, key: str) -> tuple[str, Any]:
        r = self.rng
        if r.random() < 0.35:
            return self.wrong()
        if key == "command":
            return "s", r.choice(["true", "true", "/bin/true", "false", "sleep", "/nonexistent/x",
                                  "", "x" * 5000, "t\u00e9st", "./true"])
        if key == "args":
            return "as", r.choice([[], ["1"], ["0.3"], ["a\u00e9"] * 3, ["x" * 70000],
                                   ["y"] * 5000, ["z" * 60000] * 20])
        if key == "env":
            return "a{ss}", r.choice([{}, {"A": "1"}, {"1BAD": "x"}, {"": ""}, {"A=B": "c"},
                                      {"LONG": "v" * 5000}])
        if key == "workingdir":
            return "s", r.choice(["/tmp", "/", "relative", "/nonexistent", "", "/tmp/../tmp"])
        if key == "timeout":
            return r.choice([("d", 0.5), ("d", 30.0), ("u", 10), ("i", -5), ("t", 2 ** 64 - 1),
                             ("x", 10), ("d", float("nan")), ("d", 1e12)])
        if key == "user":
            return "s", r.choice(["root", "nobody", "no-such-user", "", "0", "65534"])
        if key == "activity":
            return "s", self.an_id(self.activities)
        return "s", r.choice(["job", "", "n" * 300, "a\tb", "\u00e9t\u00e9", "x\u202ey"])

    def task(self) -> dict[str, tuple[str, Any]]:
        r = self.rng
        if r.random() < 0.1:  # a good one that takes a while: the queue fills up
            return {"command": ("s", "sleep"), "args": ("as", ["2"])}
        keys = [k for k in TASK_KEYS if r.random() < (0.95 if k == "command" else 0.3)]
        if r.random() < 0.15:
            keys.append(r.choice(["comand", "Command", "", "x" * 5000, "\u00e9", "timeout "]))
        return {k: self.task_value(k) for k in keys}

    def submit(self, member: str, body: tuple[Any, ...], codes: str) -> None:
        reply = self.send(ROOT, MANAGER, member, codes, body)
        if reply is not None and reply.header.message_type == MessageType.method_return:
            (self.tasks if member == "SubmitTask" else self.activities).append(reply.body[0])

    def one(self) -> None:
        r = self.rng
        pick = r.random()
        if pick < 0.35:
            self.submit("SubmitTask", (self.task(),), "a{sv}")
        elif pick < 0.5:
            n = r.choice([0, 1, 2, 3, 3, 10001 if r.random() < 0.05 else 2])
            tasks = [self.task() for _ in range(n)] if n <= 3 else [self.task()] * n
            self.submit("SubmitActivity", (self.text(), tasks), "saa{sv}")
        elif pick < 0.6:
            member = r.choice(["CancelTask", "CancelActivity"])
            self.send(ROOT, MANAGER, member, "s",
                      (self.an_id(self.tasks if member == "CancelTask" else self.activities),))
        elif pick < 0.67:
            self.send(ROOT, MANAGER, r.choice(["ListTasks", "ListActivities"]), "", ())
        elif pick < 0.75:  # ill-typed task calls
            member, declared = r.choice(TASK_METHODS)
            self.call(ROOT, MANAGER, member, self.signature(declared))
        elif pick < 0.9:  # the objects: ours, unknown, malformed (the bus drops us)
            kind, iface, known = r.choice([("task", TASK, self.tasks),
                                           ("activity", ACTIVITY, self.activities)])
            path = f"{ROOT}/{kind}/{self.an_id(known)}"
            member = r.choice(["Cancel", "OpenOutput"] if kind == "task" else ["Cancel"])
            if member == "OpenOutput":
                self.send(path, iface, member, "s", (r.choice(STREAMS),))
            else:
                self.send(path, iface, member, "", ())
        else:
            kind, iface, known = r.choice([("task", TASK, self.tasks),
                                           ("activity", ACTIVITY, self.activities)])
            path = f"{ROOT}/{kind}/{self.an_id(known)}"
            if r.random() < 0.5:
                self.send(path, PROPS, "Get", "ss", (iface, r.choice(TASK_PROPERTIES)))
            else:
                self.send(path, PROPS, "GetAll", "s", (r.choice([iface, TASK, ACTIVITY, ""]),))

    def run(self, count: int) -> dict[str, Any]:
        report = super().run(count)
        return {**report, "tasks": self.tasks, "activities": self.activities}


def main() -> None:
    address, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    kind = TaskFuzzer if sys.argv[4:] == ["tasks"] else Fuzzer
    print(json.dumps(kind(address, seed).run(count)))


if __name__ == "__main__":
    main()
