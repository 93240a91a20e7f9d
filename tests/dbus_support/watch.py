"""Prints, one JSON line each, the signals a UI watching the service sees: ObjectManager's
InterfacesAdded/InterfacesRemoved and PropertiesChanged of every object. Prints `ready` once
subscribed; runs until stdin closes.

usage: watch.py ADDRESS"""

import json
import sys

from gi.repository import GLib

import common

bus = common.connect(sys.argv[1])
loop = GLib.MainLoop()


def say(obj):
    print(json.dumps(obj), flush=True)


def added(path, interfaces):
    say({"signal": "InterfacesAdded", "path": str(path),
         "interfaces": sorted(str(i) for i in interfaces.keys())})


def removed(path, interfaces):
    say({"signal": "InterfacesRemoved", "path": str(path),
         "interfaces": sorted(str(i) for i in interfaces)})


def changed(interface, props, invalidated, path=None):
    say({"signal": "PropertiesChanged", "path": str(path), "interface": str(interface),
         "changed": common.plain(props)})


bus.add_signal_receiver(added, signal_name="InterfacesAdded",
                        dbus_interface="org.freedesktop.DBus.ObjectManager",
                        bus_name=common.NAME)
bus.add_signal_receiver(removed, signal_name="InterfacesRemoved",
                        dbus_interface="org.freedesktop.DBus.ObjectManager",
                        bus_name=common.NAME)
bus.add_signal_receiver(changed, signal_name="PropertiesChanged",
                        dbus_interface="org.freedesktop.DBus.Properties",
                        bus_name=common.NAME, path_keyword="path")
# A round trip, so that the match rules are in place before `ready`.
bus.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus").GetId(
    dbus_interface="org.freedesktop.DBus")


def stdin_closed(source, condition):
    loop.quit()
    return False


GLib.io_add_watch(sys.stdin, GLib.IO_HUP | GLib.IO_IN, stdin_closed)
say("ready")
loop.run()
