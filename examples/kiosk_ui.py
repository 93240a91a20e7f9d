#!/usr/bin/python3
"""A kiosk's side of a passkey registration, over passkeyd's D-Bus API.

What a kiosk UI does, without the UI: it subscribes to the ceremony's StateChanged signal,
calls CreatePasskey with the user's name and the authorization token its backend got from
LoginID (mgmt/grant, scope reg:write), shows each state ("touch your key", a PIN pad...),
answers needs-pin and needs-new-pin with the PIN, and hands the result (the LoginID token) to
its backend. Here the "screen" is stdout and the PIN pad is stdin or an environment variable.

Runs on Debian's python3-dbus and python3-gi (GLib main loop) with /usr/bin/python3:

    /usr/bin/python3 examples/kiosk_ui.py --address unix:path=/tmp/bus \\
        --username alice@example.com --token-stdin --pin-env KIOSK_PIN < token.txt

Output, one line per event:
    state <seq> <state> <details as JSON>
    result <JSON: token, user_id, passkey_id, credential_id (base64url), authenticator>
    error <org.passkeyd.Error.X> <message>
Exit status: 0 registered, 1 the ceremony failed, 2 usage, 3 passkeyd not reachable,
124 no end within the timeout (the ceremony is cancelled first), 130 interrupted.
"""

import argparse
import base64
import json
import os
import signal
import sys

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

SERVICE = "org.passkeyd"
MANAGER_PATH = "/org/passkeyd"
MANAGER = "org.passkeyd.Manager1"
CEREMONY = "org.passkeyd.Ceremony1"
FINAL = ("completed", "failed", "cancelled")


def plain(value):
    """D-Bus values as JSON-friendly Python values (byte arrays as base64url)."""
    if isinstance(value, dbus.Array) and value.signature == "y":
        return base64.urlsafe_b64encode(bytes(value)).rstrip(b"=").decode()
    if isinstance(value, (dbus.Array, list)):
        return [plain(v) for v in value]
    if isinstance(value, (dbus.Dictionary, dict)):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, dbus.Boolean):
        return bool(value)
    if isinstance(value, (dbus.String, dbus.ObjectPath)):
        return str(value)
    if isinstance(value, (int, float)):
        return int(value) if isinstance(value, int) else float(value)
    return str(value)


def say(*words):
    print(*words, flush=True)


class Kiosk:
    def __init__(self, bus, args, pin):
        self.bus = bus
        self.args = args
        self.pin = pin
        self.loop = GLib.MainLoop()
        self.path = None
        # Signals that came before CreatePasskey returned the path, and the highest seq shown.
        self.early = []
        self.last_seq = 0
        self.pin_given = False
        self.new_pin_given = False
        self.exit = 1
        self.final = False
        self.ceremony = None

    def run(self):
        # Subscribe first: the states are unicast to us from the moment the ceremony exists.
        # bus_name makes dbus-python accept them only from the service's current owner.
        self.bus.add_signal_receiver(
            self.on_state_changed,
            signal_name="StateChanged",
            dbus_interface=CEREMONY,
            bus_name=self.args.service,
            path_keyword="path",
        )
        manager = dbus.Interface(
            self.bus.get_object(self.args.service, MANAGER_PATH), MANAGER
        )
        options = dbus.Dictionary({}, signature="sv")
        if self.args.display_name:
            options["display_name"] = dbus.String(self.args.display_name)
        if self.args.authenticator:
            options["authenticator"] = dbus.ObjectPath(self.args.authenticator)
        if self.args.timeout:
            options["timeout_ms"] = dbus.UInt32(self.args.timeout * 1000)
        try:
            self.path = str(
                manager.CreatePasskey(
                    self.args.username, self.args.token, options, timeout=30
                )
            )
        except dbus.exceptions.DBusException as error:
            return self.fail(error.get_dbus_name(), error.get_dbus_message())
        say("ceremony", self.path)
        self.ceremony = dbus.Interface(
            self.bus.get_object(self.args.service, self.path, introspect=False), CEREMONY
        )
        # Catch up: the signals queued so far, then the current state (GetState), in seq order.
        seq, state, details = self.ceremony.GetState()
        updates = [u for u in self.early if u[3] == self.path]
        updates.append((int(seq), str(state), details, self.path))
        for update in sorted(updates, key=lambda u: u[0]):
            self.show(*update[:3])
        self.early = []
        if self.done():
            return self.exit
        # Our own deadline: the ceremony's timeout and a margin for its last LoginID call.
        deadline = (self.args.timeout or 600) + 45
        GLib.timeout_add_seconds(deadline, self.on_timeout)
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGINT, self.on_interrupt)
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGTERM, self.on_interrupt)
        self.loop.run()
        return self.exit

    def done(self):
        return self.last_seq > 0 and self.final

    def on_state_changed(self, seq, state, details, path=None):
        if self.path is None:
            self.early.append((int(seq), str(state), details, str(path)))
        elif str(path) == self.path:
            self.show(int(seq), str(state), details)

    def show(self, seq, state, details):
        # seq grows by one per state: what was seen already (signal and GetState) is dropped.
        if seq <= self.last_seq:
            return
        self.last_seq = seq
        self.final = state in FINAL
        say("state", seq, state, json.dumps(plain(details), sort_keys=True))
        if state == "needs-pin":
            self.answer_pin(details)
        elif state == "needs-new-pin":
            self.answer_new_pin()
        elif state in FINAL:
            self.finish(state)

    def answer_pin(self, details):
        if self.pin is None or self.pin_given:
            # No PIN, or the one we have was wrong: a kiosk would show its PIN pad again.
            reason = "no PIN source" if self.pin is None else "the PIN is wrong"
            say("cancel", reason)
            self.ceremony.Cancel()
            return
        self.pin_given = True
        self.ceremony.SubmitPin(self.pin)

    def answer_new_pin(self):
        if self.pin is None or self.new_pin_given:
            say("cancel", "no acceptable new PIN")
            self.ceremony.Cancel()
            return
        self.new_pin_given = True
        self.ceremony.SetNewPin(self.pin)

    def finish(self, state):
        try:
            result = self.ceremony.Result()
            say("result", json.dumps(
                {k: plain(result.get(k)) for k in
                 ("token", "user_id", "passkey_id", "credential_id", "authenticator")},
                sort_keys=True,
            ))
            self.exit = 0
        except dbus.exceptions.DBusException as error:
            self.fail(error.get_dbus_name(), error.get_dbus_message())
        try:
            self.ceremony.Release()
        except dbus.exceptions.DBusException:
            pass
        if self.loop.is_running():
            self.loop.quit()

    def fail(self, name, message, code=1):
        say("error", name, message or "")
        self.exit = code
        return code

    def abandon(self, name, message, code):
        say("error", name, message)
        try:
            self.ceremony.Cancel()
            self.ceremony.Release()
        except dbus.exceptions.DBusException:
            pass
        self.exit = code
        self.loop.quit()
        return False

    def on_timeout(self):
        return self.abandon("org.passkeyd.Error.Timeout", "no end in time; cancelled", 124)

    def on_interrupt(self):
        return self.abandon("org.passkeyd.Error.Cancelled", "interrupted; cancelled", 130)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bus = parser.add_mutually_exclusive_group()
    bus.add_argument("--address", help="D-Bus address of the bus (unix:path=...)")
    bus.add_argument("--system", action="store_true", help="the system bus (default)")
    bus.add_argument("--session", action="store_true", help="the session bus")
    parser.add_argument("--service", default=SERVICE, help="the service's bus name")
    parser.add_argument("--username", required=True)
    token = parser.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="the authorization token (visible in ps)")
    token.add_argument("--token-stdin", action="store_true",
                       help="read the token from the first line of stdin")
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--pin-stdin", action="store_true",
                     help="read the PIN from the next line of stdin")
    pin.add_argument("--pin-env", metavar="VAR", help="take the PIN from this variable")
    parser.add_argument("--display-name")
    parser.add_argument("--authenticator", help="object path of the key to use")
    parser.add_argument("--timeout", type=int, help="ceremony timeout in seconds")
    args = parser.parse_args()

    if args.token_stdin:
        args.token = sys.stdin.readline().rstrip("\r\n")
    secret = None
    if args.pin_stdin:
        secret = sys.stdin.readline().rstrip("\r\n")
    elif args.pin_env:
        secret = os.environ.get(args.pin_env)
        if secret is None:
            parser.error(f"{args.pin_env} is not set")

    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    try:
        if args.address:
            connection = dbus.bus.BusConnection(args.address)
        elif args.session:
            connection = dbus.SessionBus()
        else:
            connection = dbus.SystemBus()
    except dbus.exceptions.DBusException as error:
        say("error", error.get_dbus_name(), error.get_dbus_message())
        return 3
    kiosk = Kiosk(connection, args, secret)
    try:
        code = kiosk.run()
    except dbus.exceptions.DBusException as error:
        say("error", error.get_dbus_name(), error.get_dbus_message())
        code = 3 if error.get_dbus_name() in (
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
        ) else 1
    return code


if __name__ == "__main__":
    sys.exit(main())
