"""N connections call CreatePasskey at once; every call gets an answer (a ceremony path or
org.passkeyd.Error.Busy). While the flood's ceremonies still run, a fresh connection reads a
property and calls CreatePasskey (which must answer: Busy, the limit being reached).

usage: flood.py ADDRESS USERNAME TOKEN N
prints one JSON object: paths, errors (name -> count), late."""

import sys

from gi.repository import GLib

import common

address, username, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
loop = GLib.MainLoop()
connections = [common.connect(address) for _ in range(n)]
out = {"paths": [], "errors": {}, "answered": 0}


def done():
    out["answered"] += 1
    if out["answered"] == n:
        loop.quit()


def ok(path):
    out["paths"].append(str(path))
    done()


def failed(error):
    name = common.error_name(error)
    out["errors"][name] = out["errors"].get(name, 0) + 1
    done()


for bus in connections:
    common.manager(bus).CreatePasskey(username, token, common.options(), timeout=common.TIMEOUT,
                                      reply_handler=ok, error_handler=failed)
GLib.timeout_add_seconds(common.TIMEOUT, loop.quit)
loop.run()

late = common.connect(address)
props = common.dbus.Interface(late.get_object(common.NAME, common.ROOT, introspect=False),
                              "org.freedesktop.DBus.Properties")
out["late_version"] = str(props.Get(common.MANAGER, "Version", timeout=common.TIMEOUT))
out["late_ceremonies"] = len(props.Get(common.MANAGER, "Ceremonies", timeout=common.TIMEOUT))
try:
    common.manager(late).CreatePasskey(username, token, common.options(), timeout=common.TIMEOUT)
    out["late_create"] = "path"
except common.dbus.exceptions.DBusException as e:
    out["late_create"] = common.error_name(e)
common.emit(out)
