"""A small stand-in for upstream cyclesafe's server.py, written here (tests only).

Like upstream's, it imports ``server_api_model`` and calls exactly
``save_json_file(response_json, filename, genkey)`` on POST and
``retrieve_json_results(key)`` on GET, and answers GET with ``json.dumps`` of what the
latter returns (the double-encoded form the page parses).
"""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the same file: run, it is found on the PYTHONPATH test_compat sets (compat.PATH)
    from modelgen_watcher.server.compat import server_api_model
else:
    import server_api_model

STATIC_KEY = "100001"  # upstream's one global slot


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _reply(self, code, text):
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers["Content-Length"])
        message = json.loads(self.rfile.read(length))
        key, _ = server_api_model.save_json_file(message, "gps_input_route.json", STATIC_KEY)
        self._reply(200, json.dumps({"key": key}))

    def do_GET(self):
        try:
            self._reply(200, json.dumps(server_api_model.retrieve_json_results(STATIC_KEY)))
        except Exception as exc:  # noqa: BLE001 - upstream #22: the error must reach the browser
            self._reply(500, json.dumps({"error": type(exc).__name__, "message": str(exc)}))


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
