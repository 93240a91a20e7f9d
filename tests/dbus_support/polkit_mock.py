"""A stand-in for polkit's authority on a private bus: owns org.freedesktop.PolicyKit1 and
answers CheckAuthorization according to MODE: `allow`, `deny`, or `hold` (answer `allow` only
once a line arrives on stdin). Prints `ready` once it owns the name, then one JSON line per
call (action, subject kind and name, flags).

usage: polkit_mock.py ADDRESS MODE"""

import json
import sys

import dbus
import dbus.service
from gi.repository import GLib

import common

address, mode = sys.argv[1:3]
bus = common.connect(address)
held = []


class Authority(dbus.service.Object):
    @dbus.service.method("org.freedesktop.PolicyKit1.Authority",
                         in_signature="(sa{sv})sa{ss}us", out_signature="(bba{ss})",
                         async_callbacks=("reply", "error"))
    def CheckAuthorization(self, subject, action_id, details, flags, cancellation_id,
                           reply, error):
        kind, subject_details = subject
        print(json.dumps({
            "action": str(action_id),
            "subject": str(kind),
            "name": str(subject_details.get("name", "")),
            "flags": int(flags),
        }), flush=True)
        if mode == "allow":
            reply((True, False, {}))
        elif mode == "deny":
            reply((False, False, {}))
        else:
            held.append(reply)


loop = GLib.MainLoop()


def release(source, condition):
    line = sys.stdin.readline()
    for reply in held:
        reply((True, False, {}))
    held.clear()
    if not line:
        loop.quit()
    return bool(line)


Authority(bus, "/org/freedesktop/PolicyKit1/Authority")
bus.request_name("org.freedesktop.PolicyKit1")
GLib.io_add_watch(sys.stdin, GLib.IO_IN | GLib.IO_HUP, release)
print("ready", flush=True)
loop.run()
