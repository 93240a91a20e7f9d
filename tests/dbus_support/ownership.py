"""A second connection calls every method of another connection's ceremony; the owner then
checks its ceremony is unaffected and cancels it.

usage: ownership.py ADDRESS USERNAME TOKEN
prints one JSON object."""

import sys
import time

import dbus

import common

from gi.repository import GLib

address, username, token = sys.argv[1:4]
owner = common.connect(address)
other = common.connect(address)
seen = {"owner": [], "other": []}
loop = GLib.MainLoop()


def receiver(who):
    def on_state(seq, state, details, path=None):
        seen[who].append(str(state))
        if who == "owner" and state == "cancelled":
            loop.quit()
    return on_state


# Both subscribe to every ceremony's StateChanged: only the owner may receive its signals.
for who, bus in (("owner", owner), ("other", other)):
    bus.add_signal_receiver(receiver(who), signal_name="StateChanged",
                            dbus_interface=common.CEREMONY, path_keyword="path")
path = common.manager(owner).CreatePasskey(username, token, common.options(), timeout=common.TIMEOUT)
out = {"path": str(path), "other": {}}
before = common.plain(common.ceremony(owner, path).GetState(timeout=common.TIMEOUT))
intruder = common.ceremony(other, path)
calls = {
    "GetState": (), "SubmitPin": ("1234",), "SetNewPin": ("123456",), "Cancel": (),
    "Result": (), "Release": (),
}
for method, args in calls.items():
    try:
        getattr(intruder, method)(*args, timeout=common.TIMEOUT)
        out["other"][method] = "succeeded"
    except dbus.exceptions.DBusException as e:
        out["other"][method] = common.error_name(e)
# Properties reveal nothing and are not refused: the interface has none.
props = dbus.Interface(other.get_object(common.NAME, path, introspect=False),
                       "org.freedesktop.DBus.Properties")
out["other_get_all"] = common.plain(props.GetAll(common.CEREMONY, timeout=common.TIMEOUT))
mine = common.ceremony(owner, path)
after = common.plain(mine.GetState(timeout=common.TIMEOUT))
out["state_before"] = before
out["state_after"] = after
try:
    mine.Result(timeout=common.TIMEOUT)
except dbus.exceptions.DBusException as e:
    out["owner_result_while_running"] = common.error_name(e)
try:
    mine.SubmitPin("1234", timeout=common.TIMEOUT)
except dbus.exceptions.DBusException as e:
    out["owner_submit_pin_in_selecting"] = common.error_name(e)
mine.Cancel(timeout=common.TIMEOUT)
mine.Cancel(timeout=common.TIMEOUT)
GLib.timeout_add_seconds(common.TIMEOUT, loop.quit)
loop.run()
# Anything sent to `other` along with the owner's signal is queued before this reply.
other.get_object("org.freedesktop.DBus", "/org/freedesktop/DBus").GetId(
    dbus_interface="org.freedesktop.DBus")
context = GLib.MainContext.default()
while context.pending():
    context.iteration(False)
out["signals_seen"] = seen
deadline = time.monotonic() + common.TIMEOUT
while True:
    state = common.plain(mine.GetState(timeout=common.TIMEOUT))
    if state[1] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
        break
    time.sleep(0.02)
out["final_state"] = state
try:
    mine.Result(timeout=common.TIMEOUT)
except dbus.exceptions.DBusException as e:
    out["owner_result_after_cancel"] = common.error_name(e)
mine.Release(timeout=common.TIMEOUT)
common.emit(out)
