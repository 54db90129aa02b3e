"""A local stand-in for the API Gateway Management API of the WebSocket API (the local target).

The emulator accepts ``post_to_connection`` but keeps what it is sent to itself, so the local
target's notifier posts here instead: ``POST [/<stage>]/@connections/<id>`` appends one JSON line
``{"connection_id", "received_at", "data"}`` to the record file (mode 0600), which the smoke test
of ``make run`` reads. ``DELETE`` of a connection answers 204 and ``GET`` 200, as AWS does for a
live connection; a connection listed in the ``--gone`` file answers 410 ``GoneException``. Posts
above 128 KiB (the API's limit) get 413. Binds to one address and port, 127.0.0.1 by default.

    python management_api.py --port 4570 --record posts.jsonl [--gone gone.txt]
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import threading
import time
import urllib.parse
from pathlib import Path

MAX_DATA_BYTES = 128 * 1024
CONNECTION_PATH = re.compile(r"^(?:/[^/]+)?/@connections/(?P<id>[^/?]+)$")


class Recorder:
    def __init__(self, record: Path, gone: Path | None) -> None:
        self.record = record
        self.gone = gone
        self.lock = threading.Lock()
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        record.chmod(0o600)

    def is_gone(self, connection_id: str) -> bool:
        if self.gone is None or not self.gone.exists():
            return False
        return connection_id in self.gone.read_text().split()

    def append(self, connection_id: str, data: str) -> None:
        line = json.dumps({"connection_id": connection_id, "received_at": time.time(), "data": data})
        with self.lock, self.record.open("a") as out:
            out.write(line + "\n")


def handler_for(recorder: Recorder) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _connection(self) -> str | None:
            match = CONNECTION_PATH.match(urllib.parse.urlsplit(self.path).path)
            return urllib.parse.unquote(match["id"]) if match else None

        def _answer(self, status: int, error: str | None = None) -> None:
            body = json.dumps({"message": error}).encode() if error else b""
            self.send_response(status)
            if error:
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-ErrorType", error)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> str | None:
            connection_id = self._connection()
            if connection_id is None:
                self._answer(404, "NotFoundException")
            elif recorder.is_gone(connection_id):
                self._answer(410, "GoneException")
            else:
                return connection_id
            return None

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            connection_id = self._route()
            if connection_id is None:
                return
            if length > MAX_DATA_BYTES:
                self._answer(413, "PayloadTooLargeException")
                return
            recorder.append(connection_id, data.decode("utf-8", "replace"))
            self._answer(200)

        def do_GET(self) -> None:
            if self._route() is not None:
                self._answer(200)

        def do_DELETE(self) -> None:
            if self._route() is not None:
                self._answer(204)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the record file is the log; a request line would carry connection ids only

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--gone", type=Path)
    args = parser.parse_args(argv)
    recorder = Recorder(args.record, args.gone)
    server = http.server.ThreadingHTTPServer((args.host, args.port), handler_for(recorder))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
