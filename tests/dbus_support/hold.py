"""Starts a ceremony, prints its path and holds the connection (so the ceremony stays) until
stdin closes; then cancels nothing and exits.

usage: hold.py ADDRESS USERNAME TOKEN"""

import sys

import common

address, username, token = sys.argv[1:4]
bus = common.connect(address)
path = common.manager(bus).CreatePasskey(username, token, common.options(), timeout=common.TIMEOUT)
print(str(path), flush=True)
sys.stdin.read()
