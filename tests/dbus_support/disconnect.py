"""Starts a ceremony, waits until it needs a touch, prints its path and exits without
cancelling: the connection closes with the process.

usage: disconnect.py ADDRESS USERNAME TOKEN"""

import sys

from gi.repository import GLib

import common

address, username, token = sys.argv[1:4]
bus = common.connect(address)
loop = GLib.MainLoop()
seen = []


def on_state(seq, state, details, path=None):
    seen.append(str(state))
    if state != "selecting":
        loop.quit()


bus.add_signal_receiver(on_state, signal_name="StateChanged", dbus_interface=common.CEREMONY,
                        path_keyword="path")
path = common.manager(bus).CreatePasskey(username, token, common.options(), timeout=common.TIMEOUT)
GLib.timeout_add_seconds(common.TIMEOUT, loop.quit)
loop.run()
common.emit({"path": str(path), "states": seen})
