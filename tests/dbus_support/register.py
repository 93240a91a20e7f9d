"""A full registration as a UI does it: subscribe to the ceremony's signals, CreatePasskey,
answer needs-pin with SubmitPin (a wrong PIN first, then the right one) or needs-new-pin with
SetNewPin, receive the states
and the Completed signal, then read Result() and Release().

usage: register.py ADDRESS USERNAME TOKEN PIN WRONG_PIN
prints one JSON object: states, completed (the signal's result), result, released."""

import sys

from gi.repository import GLib

import common

address, username, token, pin, wrong_pin = sys.argv[1:6]
bus = common.connect(address)
loop = GLib.MainLoop()
signals = {}  # path -> [("state", seq, state, details) | ("completed", result)]
out = {"states": [], "completed": None, "errors": []}
mine = {"path": None, "pins": [wrong_pin, pin]}


def handle(path):
    events = signals.get(path, [])
    while events:
        event = events.pop(0)
        if event[0] == "completed":
            out["completed"] = common.plain(event[1])
            continue
        _, seq, state, details = event
        out["states"].append({"seq": int(seq), "state": str(state), "details": common.plain(details)})
        if state == "needs-pin":
            cer = common.ceremony(bus, path)
            try:
                cer.SubmitPin(mine["pins"].pop(0), timeout=common.TIMEOUT)
            except Exception as e:  # noqa: BLE001
                out["errors"].append(common.error_name(e))
        if state == "needs-new-pin":
            try:
                common.ceremony(bus, path).SetNewPin(pin, timeout=common.TIMEOUT)
            except Exception as e:  # noqa: BLE001
                out["errors"].append(common.error_name(e))
        if state in ("completed", "failed", "cancelled"):
            loop.quit()


def on_state(seq, state, details, path=None):
    signals.setdefault(path, []).append(("state", seq, state, details))
    if path == mine["path"]:
        handle(path)


def on_completed(result, path=None):
    signals.setdefault(path, []).append(("completed", result))
    if path == mine["path"]:
        handle(path)


# Subscribe before the call, so that no state is missed.
bus.add_signal_receiver(on_state, signal_name="StateChanged", dbus_interface=common.CEREMONY,
                        path_keyword="path")
bus.add_signal_receiver(on_completed, signal_name="Completed", dbus_interface=common.CEREMONY,
                        path_keyword="path")
path = common.manager(bus).CreatePasskey(username, token, common.options(), timeout=common.TIMEOUT)
mine["path"] = str(path)
out["path"] = mine["path"]
# Signals that came before the reply wait in `signals`.
GLib.idle_add(lambda: handle(mine["path"]) and False)
GLib.timeout_add_seconds(common.TIMEOUT, loop.quit)
loop.run()

cer = common.ceremony(bus, mine["path"])
out["get_state"] = common.plain(cer.GetState(timeout=common.TIMEOUT))
try:
    out["result"] = common.plain(cer.Result(timeout=common.TIMEOUT))
except Exception as e:  # noqa: BLE001
    out["result_error"] = common.error_name(e)
cer.Release(timeout=common.TIMEOUT)
out["released"] = True
common.emit(out)
