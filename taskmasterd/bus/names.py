"""D-Bus names of interface version 1 (SPEC section 5) and path escaping."""

from __future__ import annotations

BUS_NAME = "org.taskmaster.Taskmaster1"
MANAGER_PATH = "/org/taskmaster/Taskmaster1"
PROGRAM_PREFIX = MANAGER_PATH + "/program/"
TASK_PREFIX = MANAGER_PATH + "/task/"
ACTIVITY_PREFIX = MANAGER_PATH + "/activity/"
MANAGER_IFACE = "org.taskmaster.Taskmaster1.Manager"
PROGRAM_IFACE = "org.taskmaster.Taskmaster1.Program"
TASK_IFACE = "org.taskmaster.Taskmaster1.Task"
ACTIVITY_IFACE = "org.taskmaster.Taskmaster1.Activity"
ERROR_PREFIX = "org.taskmaster.Taskmaster1.Error."


def path_encode(name: str) -> str:
    """sd_bus_path_encode: every byte but [A-Za-z0-9] becomes _xx (hex)."""
    if not name:
        return "_"
    return "".join(c if c.isascii() and c.isalnum() else "".join(f"_{b:02x}" for b in c.encode())
                   for c in name)


def path_decode(label: str) -> str:
    if label == "_":
        return ""
    out = bytearray()
    i = 0
    while i < len(label):
        if label[i] == "_":
            out.append(int(label[i + 1:i + 3], 16))
            i += 3
        else:
            out += label[i].encode()
            i += 1
    return out.decode()


def program_path(name: str) -> str:
    return PROGRAM_PREFIX + path_encode(name)


def task_path(task_id: str) -> str:
    """A task's object; ids are lowercase hex (records.new_id), which the
    escaping leaves as they are."""
    return TASK_PREFIX + path_encode(task_id)


def activity_path(activity_id: str) -> str:
    return ACTIVITY_PREFIX + path_encode(activity_id)
