"""Helpers shared by the python3-dbus clients of the D-Bus tests."""

import json
import sys

import dbus
import dbus.bus
from dbus.mainloop.glib import DBusGMainLoop

DBusGMainLoop(set_as_default=True)

NAME = "org.passkeyd"
ROOT = "/org/passkeyd"
MANAGER = "org.passkeyd.Manager1"
CEREMONY = "org.passkeyd.Ceremony1"

# Long enough for a loaded machine; D-Bus's default is 25 s.
TIMEOUT = 120


def connect(address):
    return dbus.bus.BusConnection(address)


def manager(bus):
    return dbus.Interface(bus.get_object(NAME, ROOT, introspect=False), MANAGER)


def ceremony(bus, path):
    return dbus.Interface(bus.get_object(NAME, path, introspect=False), CEREMONY)


def plain(value):
    """D-Bus values as JSON-friendly ones; byte arrays as hex."""
    if isinstance(value, dbus.Dictionary):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (dbus.Array, dbus.Struct, list, tuple)):
        if getattr(value, "signature", None) == "y":
            return bytes(int(b) for b in value).hex()
        return [plain(v) for v in value]
    if isinstance(value, dbus.ByteArray):
        return bytes(value).hex()
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.Byte, dbus.Int16, dbus.UInt16, dbus.Int32, dbus.UInt32,
                          dbus.Int64, dbus.UInt64)):
        return int(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath, str)):
        return str(value)
    return value


def error_name(error):
    return error.get_dbus_name() if isinstance(error, dbus.exceptions.DBusException) else repr(error)


def options(**entries):
    return dbus.Dictionary(entries, signature="sv")


def emit(obj):
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
