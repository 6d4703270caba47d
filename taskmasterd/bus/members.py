"""`init_interface`: dbus-next's `ServiceInterface.__init__`, its class scan done once per class.

dbus-next 0.2.3 finds an interface's methods, properties and signals with
`inspect.getmembers(type(self))` in every instance's `__init__`: for the
objects made by the thousand (one `Task` per task submitted) that scan was
a third of an export's cost. The lists depend on the class only, so the
first instance of a class runs the library's `__init__` and every later one
gets the same three lists (nothing changes them after `__init__`).

This sets the library's private attributes (`_ServiceInterface__methods`
...): relying on dbus-next's privates is the project's accepted practice
because pinned.py pins the version they were read from (0.2.3), as
messagebus.py's overrides do.
"""

from __future__ import annotations

from typing import Any

from dbus_next.service import ServiceInterface

# class -> (methods, properties, signals), as the library's __init__ found them
_MEMBERS: dict[type, tuple[list[Any], list[Any], list[Any]]] = {}


def init_interface(interface: ServiceInterface, name: str) -> None:
    """What `ServiceInterface.__init__(interface, name)` does, without the
    class scan after the first instance of `type(interface)`."""
    members = _MEMBERS.get(type(interface))
    if members is None:
        ServiceInterface.__init__(interface, name)
        _MEMBERS[type(interface)] = (ServiceInterface._get_methods(interface),
                                     ServiceInterface._get_properties(interface),
                                     ServiceInterface._get_signals(interface))
        return
    interface.name = name
    attributes = interface.__dict__  # the names the library's double underscores make
    (attributes["_ServiceInterface__methods"], attributes["_ServiceInterface__properties"],
     attributes["_ServiceInterface__signals"]) = members
    attributes["_ServiceInterface__buses"] = set()


_SIGNATURES: dict[type, list[tuple[str, str]]] = {}


def property_signatures(interface: ServiceInterface) -> list[tuple[str, str]]:
    """(name, signature) of each of the interface's properties, in the
    library's order (that of its PropertiesChanged and GetAll); per class."""
    signatures = _SIGNATURES.get(type(interface))
    if signatures is None:
        signatures = _SIGNATURES[type(interface)] = [
            (prop.name, prop.signature) for prop in ServiceInterface._get_properties(interface)]
    return signatures
