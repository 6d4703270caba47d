"""Signals whose bodies the daemon's own code builds, written straight to bytes.

dbus-next 0.2.3 sends a signal through `_handle_signal` (the result wrapped
and scanned for fds), a `Message` (its names validated) and a second check
of the body against the signature when it is written; PropertiesChanged
makes and checks a `Variant` per property. For the signals every task sends
(three TaskStateChanged, PropertiesChanged) that was most of the daemon's
D-Bus time. Here:

- `trusted_signal()` replaces dbus-next's `@signal()` on a method whose
  body has known types: the same introspection data (the library's own
  `_Signal`, so `named` and introspection see no difference), the body
  encoded once with `wire.encode_trusted` and sent by each TaskmasterBus
  the interface is exported on with `send_interface_signal` (another bus
  gets the library's `_interface_signal_notify`).
- `TrustedInterface`, a ServiceInterface base: `members.init_interface` for
  its `__init__`; its PropertiesChanged (`emit_properties_changed`) and
  InterfacesAdded (`interfaces_added_body`, from `announced_values()`)
  bodies written with an encoder of its properties made once per class
  (`wire.properties_encoder`: no Variant made or checked), for objects
  whose property values are the daemon's own: tasks and activities.

The bytes are those the library path writes (tests/unit/test_dbus_signals.py
compares them); only a value of a wrong type is not refused the library's
way (wire.encode_trusted).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from dbus_next.errors import SignalDisabledError, SignatureBodyMismatchError
from dbus_next.service import ServiceInterface
from dbus_next.service import signal as dbus_signal

from taskmasterd.bus import wire
from taskmasterd.bus.members import init_interface, property_signatures

PROPERTIES = "org.freedesktop.DBus.Properties"


def _send(interface: ServiceInterface, interface_name: str, member: str, signature: str,
          body: list[Any]) -> None:
    """The signal on every bus `interface` is exported on, as the library
    would send it; on a TaskmasterBus, the body encoded unchecked, once."""
    data = None
    for bus in ServiceInterface._get_buses(interface):
        send = getattr(bus, "send_interface_signal", None)
        if send is None:  # a library MessageBus
            bus._interface_signal_notify(interface, interface_name, member, signature, body, [])
            continue
        if data is None:
            data = wire.encode_trusted(signature, body)
        send(interface, interface_name, member, signature, data)


def trusted_signal(name: str | None = None) -> Callable[[Any], Any]:
    """dbus-next's `@signal(name)` for a method returning its values with
    known types (no 'h': those keep the library's decorator)."""
    def decorator(fn: Any) -> Any:
        library = dbus_signal(name)(fn)
        signal = library.__dict__["__DBUS_SIGNAL"]
        count = len(signal.signature_tree.types)
        if "h" in signal.signature:
            return library

        @functools.wraps(fn)
        def emit(self: ServiceInterface, *args: Any, **kwargs: Any) -> Any:
            # ServiceInterface._handle_signal and _fn_result_to_body, for a body without fds
            if signal.disabled:
                raise SignalDisabledError("Tried to call a disabled signal")
            result = fn(self, *args, **kwargs)
            if result is None:
                body: Any = []
            elif count == 1:
                body = [result]
            else:
                body = result
                if type(body) is not list:
                    raise SignatureBodyMismatchError("Expected signal to return a list of arguments")
            if count != len(body):
                raise SignatureBodyMismatchError(
                    f"Signature and function return mismatch, expected {count} arguments but "
                    f"got {len(body)}")
            _send(self, self.name, signal.name, signal.signature, body)
            return result

        emit.__dict__["__DBUS_SIGNAL"] = signal
        return emit
    return decorator


_ENCODERS: dict[type, wire.PropertiesEncoder] = {}


class TrustedInterface(ServiceInterface):  # type: ignore[misc]
    """A ServiceInterface made without the class scan (members.init_interface)
    whose property values (PropertiesChanged, InterfacesAdded) are written
    unchecked, by an encoder made once per class."""

    def __init__(self, name: str) -> None:
        init_interface(self, name)

    def _properties(self) -> wire.PropertiesEncoder:
        encoder = _ENCODERS.get(type(self))
        if encoder is None:
            encoder = _ENCODERS[type(self)] = wire.properties_encoder(property_signatures(self))
        return encoder

    def announced_values(self) -> dict[str, Any] | None:
        """Every property's value (name -> value), what GetAll would answer,
        for InterfacesAdded; None: the bus reads them as GetAll does."""
        return None

    def interfaces_added_body(self, path: str) -> bytearray | None:
        """InterfacesAdded's body for this interface exported on `path`
        (messagebus.TaskmasterBus), from `announced_values()`; None without them."""
        values = self.announced_values()
        if values is None:
            return None
        return wire.encode_interfaces_added(path, self.name, self._properties(), values)

    def emit_properties_changed(self, changed_properties: dict[str, Any],
                                invalidated_properties: list[str] | None = None) -> None:
        """dbus-next 0.2.3's `ServiceInterface.emit_properties_changed`, the values unchecked
        (the library's own, Variants, when a bus is not a TaskmasterBus)."""
        invalidated = invalidated_properties or []
        buses = ServiceInterface._get_buses(self)
        if not all(hasattr(bus, "send_interface_signal") for bus in buses):
            super().emit_properties_changed(changed_properties, invalidated)
            return
        if not buses:
            return
        body = wire.encode_properties_changed(self.name, self._properties(), changed_properties,
                                              invalidated)
        for bus in buses:
            bus.send_interface_signal(self, PROPERTIES, "PropertiesChanged", "sa{sv}as", body)
