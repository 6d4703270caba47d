"""The introspection XML of our interfaces, from the adapter classes, and
what a node's introspection lists.

`python -m taskmasterd.bus.introspect DIR` writes dbus/<interface>.xml; a
test checks that the files in dbus/ match both this and what a running
daemon serves, so the published XML can't drift from the code. Another
compares whole nodes, as served, with tests/golden/ (the frozen API).

`manager_only_at(bus, path)`: dbus-next 0.2.3 lists
org.freedesktop.DBus.ObjectManager on every exported node and answers
GetManagedObjects on any path; the ObjectManager is ours at one path only.
"""

from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from dbus_next import DBusError, Message
from dbus_next.constants import ErrorType

from taskmasterd.bus.objects import Manager, Program
from taskmasterd.bus.taskobjects import Activity, Task

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"

DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')


def interfaces() -> dict[str, ET.Element]:
    controller: Any = None  # introspection reads the class, never the engine
    out = {}
    for obj in (Manager(controller), Program(controller, "x"), Task(controller, "x"),
                Activity(controller, "x")):
        element = obj.introspect().to_xml()
        out[element.get("name", "")] = element
    return out


def document(name: str, element: ET.Element) -> str:
    node = ET.Element("node")
    node.append(element)
    ET.indent(node)
    return DOCTYPE + ET.tostring(node, encoding="unicode") + "\n"


def canonical(element: ET.Element) -> str:
    """Order-insensitive text of an <interface> element, for comparisons."""
    def walk(e: ET.Element) -> str:
        attrs = " ".join(f"{k}={v}" for k, v in sorted(e.attrib.items()))
        children = sorted(walk(c) for c in e)
        return f"<{e.tag} {attrs}>" + "".join(children) + f"</{e.tag}>"
    return walk(element)


def normalised(xml: str) -> str:
    """A node's introspection XML in a stable form, for the golden files:
    no DOCTYPE, comments or whitespace, no path in the root's name; the
    interfaces, their members and the child nodes sorted by name (their
    order means nothing in D-Bus); the arguments in their order (it does)."""
    def walk(e: ET.Element, root: bool = False) -> ET.Element:
        out = ET.Element(e.tag, {k: v for k, v in sorted(e.attrib.items())
                                 if not (root and k == "name")})
        children = [walk(c) for c in e]
        if e.tag != "method" and e.tag != "signal":
            children.sort(key=lambda c: (c.tag, c.get("name", "")))
        out.extend(children)
        return out

    node = walk(ET.fromstring(xml), root=True)
    ET.indent(node)
    return ET.tostring(node, encoding="unicode") + "\n"


def manager_only_at(bus: Any, manager_path: str) -> None:
    """Make `bus` list the ObjectManager interface on `manager_path` only,
    and answer GetManagedObjects elsewhere with UnknownMethod (per bus)."""
    library_introspect = types.MethodType(type(bus)._introspect_export_path, bus)
    library_managed = types.MethodType(type(bus)._default_get_managed_objects_handler, bus)

    def introspect_export_path(path: str) -> Any:
        node = library_introspect(path)
        if path != manager_path:
            node.interfaces = [i for i in node.interfaces if i.name != OBJECT_MANAGER]
        return node

    def get_managed_objects(msg: Message, send_reply: Any) -> None:
        if msg.path != manager_path:
            raise DBusError(ErrorType.UNKNOWN_METHOD, f"no {OBJECT_MANAGER} at {msg.path}: "
                            f"it is at {manager_path}")
        library_managed(msg, send_reply)

    bus._introspect_export_path = introspect_export_path
    bus._default_get_managed_objects_handler = get_managed_objects


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "dbus")
    for name, element in interfaces().items():
        (target / f"{name}.xml").write_text(document(name, element))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
