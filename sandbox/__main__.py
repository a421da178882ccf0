"""``python -m sandbox --host 127.0.0.1 --port 8055 [--config FILE.json]``."""

from __future__ import annotations

import argparse
import signal
import threading

from sandbox.carrier import SandboxCarrier
from sandbox.config import SandboxConfig
from shared import heap


def main() -> None:
    """Serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="Twilio-compatible sandbox carrier")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8055)
    parser.add_argument("--config", help="JSON file with rules, seed, accounts, fetch_twiml")
    parser.add_argument("--account-sid")
    parser.add_argument("--auth-token")
    args = parser.parse_args()
    config = SandboxConfig.from_json_file(args.config) if args.config else SandboxConfig()
    if args.account_sid and args.auth_token:
        config.accounts = {args.account_sid: args.auth_token}
    carrier = SandboxCarrier(config, host=args.host, port=args.port).start()
    heap.settle()
    print(f"sandbox carrier listening on {carrier.base_url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    carrier.stop()


if __name__ == "__main__":
    main()
