"""CreatePasskey with bad arguments; every call must fail with
org.passkeyd.Error.InvalidArgument.

usage: bad_args.py ADDRESS TOKEN
prints one JSON object: case -> error name (or "succeeded")."""

import sys

import dbus

import common

address, token = sys.argv[1:3]
bus = common.connect(address)
mgr = common.manager(bus)
many = dbus.Dictionary({"k%d" % i: dbus.UInt32(1) for i in range(17)}, signature="sv")
cases = {
    "empty username": ("", token, common.options()),
    "empty token": ("alice", "", common.options()),
    "1 MB token": ("alice", "a" * (1 << 20), common.options()),
    "long username": ("a" * 257, token, common.options()),
    "unknown option": ("alice", token, common.options(colour=dbus.String("red"))),
    "wrong option type": ("alice", token, common.options(timeout_ms=dbus.String("100"))),
    "wrong integer type": ("alice", token, common.options(timeout_ms=dbus.UInt64(100))),
    "too many options": ("alice", token, many),
    "bad username type": ("alice", token, common.options(username_type=dbus.String("x"))),
    "bad authenticator": ("alice", token,
                          common.options(authenticator=dbus.ObjectPath("/org/passkeyd/ceremony/1"))),
    "long pin": ("alice", token, common.options(pin=dbus.String("1" * 64))),
    "short pin": ("alice", token, common.options(pin=dbus.String("12"))),
    "zero timeout": ("alice", token, common.options(timeout_ms=dbus.UInt32(0))),
}
out = {}
for case, args in cases.items():
    try:
        mgr.CreatePasskey(*args, timeout=common.TIMEOUT)
        out[case] = "succeeded"
    except dbus.exceptions.DBusException as e:
        out[case] = common.error_name(e)
        if token in (e.get_dbus_message() or ""):
            out[case] += " (message repeats the token)"
common.emit(out)
