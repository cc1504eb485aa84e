"""A webhook receiver in its own process: ``python -m tests.support.webhook_receiver
PORT LOG [FAIL_FIRST]``.

It answers 500 to the first FAIL_FIRST requests and 200 to the rest, and appends each
request to LOG as one JSON line: ``{"headers": {...}, "body": "...", "status": N}``.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def main() -> None:
    port, log = int(sys.argv[1]), Path(sys.argv[2])
    fail_first = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    seen = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with lock:
                seen[0] += 1
                status = 500 if seen[0] <= fail_first else 200
                line = {
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(),
                    "status": status,
                }
                with log.open("a") as out:
                    out.write(json.dumps(line) + "\n")
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
