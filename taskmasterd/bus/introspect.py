"""The introspection XML of our interfaces, from the adapter classes.

`python -m taskmasterd.bus.introspect DIR` writes dbus/<interface>.xml; a
test checks that the files in dbus/ match both this and what a running
daemon serves, so the published XML can't drift from the code.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from taskmasterd.bus.objects import Manager, Program

DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')


def interfaces() -> dict[str, ET.Element]:
    controller: Any = None  # introspection reads the class, never the engine
    out = {}
    for obj in (Manager(controller), Program(controller, "x")):
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


def main(argv: list[str]) -> int:
    target = Path(argv[0] if argv else "dbus")
    for name, element in interfaces().items():
        (target / f"{name}.xml").write_text(document(name, element))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
