"""One connection calls CreatePasskey three times; the third is over the per-caller limit.

usage: per_caller.py ADDRESS USERNAME TOKEN
prints one JSON list of answers (a path or an error name)."""

import sys

import dbus

import common

address, username, token = sys.argv[1:4]
bus = common.connect(address)
answers = []
for _ in range(3):
    try:
        answers.append(str(common.manager(bus).CreatePasskey(username, token, common.options(),
                                                             timeout=common.TIMEOUT)))
    except dbus.exceptions.DBusException as e:
        answers.append(common.error_name(e))
common.emit(answers)
