"""python-fido2 as a CTAP2 client of a virtkey socket, timed per operation.

Run by tools/bench/run (through the bench's peers harness) with the venv's python:

    fido2_client.py --socket DIR/NAME.sock --pin PIN --rounds N --warm-up W --rp-id ID

The key is reached through python-fido2's own CTAPHID implementation (``CtapHidDevice``)
over a small connection adapter: the virtkey socket is SOCK_SEQPACKET, one message = one
64-byte report without the report-ID byte, which is exactly what ``read_packet`` and
``write_packet`` of a ``CtapHidConnection`` exchange. Each round does, as the other clients
of the benchmark do:

- getInfo;
- a pinUvAuthToken: clientPIN getKeyAgreement (protocol two), then
  getPinUvAuthTokenUsingPinWithPermissions (mc permission, the RP ID), decrypted;
- makeCredential (ES256, not resident) with the pinUvAuthParam from that token; the key
  touches itself.

Prints one JSON object: for each operation a list of [wall_ns, cpu_ns] pairs (the rounds
after the warm-up), CPU being this process's (time.process_time_ns: CLOCK_PROCESS_CPUTIME_ID,
the clock the Rust clients read too).
"""

import argparse
import hashlib
import json
import socket
import sys
import time

from fido2.ctap2 import Ctap2
from fido2.ctap2.pin import ClientPin, PinProtocolV2
from fido2.hid import CtapHidDevice
from fido2.hid.base import CtapHidConnection, HidDescriptor

REPORT_LEN = 64


class SeqpacketConnection(CtapHidConnection):
    """A CtapHidConnection over a virtkey's SOCK_SEQPACKET socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)

    def read_packet(self):
        return self.sock.recv(REPORT_LEN)

    def write_packet(self, data):
        # python-fido2 hands over the report without its ID byte, padded to the report size.
        self.sock.send(bytes(data).ljust(REPORT_LEN, b"\0"))

    def close(self):
        self.sock.close()


def timed(samples, name, fn):
    wall = time.perf_counter_ns()
    cpu = time.process_time_ns()
    result = fn()
    samples.setdefault(name, []).append(
        [time.perf_counter_ns() - wall, time.process_time_ns() - cpu]
    )
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--pin", required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--warm-up", type=int, default=2)
    parser.add_argument("--rp-id", required=True)
    args = parser.parse_args()

    descriptor = HidDescriptor(
        args.socket, 0, 0, REPORT_LEN, REPORT_LEN, "virtkey", None
    )
    device = CtapHidDevice(descriptor, SeqpacketConnection(args.socket))
    ctap2 = Ctap2(device)  # reads getInfo once, as every client's set-up does
    protocol = PinProtocolV2()
    client_pin = ClientPin(ctap2, protocol)
    rp = {"id": args.rp_id, "name": "Example"}
    user = {"id": b"peers-bench-user", "name": "alice", "displayName": "Alice"}
    key_params = [{"type": "public-key", "alg": -7}]

    samples = {}
    for round_ in range(args.warm_up + args.rounds):
        round_samples = {}
        timed(round_samples, "getInfo", ctap2.get_info)
        token = timed(
            round_samples,
            "pinToken",
            lambda: client_pin.get_pin_token(
                args.pin, ClientPin.PERMISSION.MAKE_CREDENTIAL, args.rp_id
            ),
        )

        def make_credential():
            client_data_hash = hashlib.sha256(b"peers-bench-client-data").digest()
            response = ctap2.make_credential(
                client_data_hash,
                rp,
                user,
                key_params,
                pin_uv_param=protocol.authenticate(token, client_data_hash),
                pin_uv_protocol=protocol.VERSION,
            )
            if response.fmt != "packed":
                raise RuntimeError("unexpected attestation format %r" % response.fmt)
            return response

        timed(round_samples, "makeCredential", make_credential)
        if round_ >= args.warm_up:
            for name, values in round_samples.items():
                samples.setdefault(name, []).extend(values)
    device.close()
    json.dump(samples, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
