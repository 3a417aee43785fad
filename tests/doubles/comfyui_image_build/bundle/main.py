"""Stub ComfyUI: parses the options aitherctl relies on as comfy/cli_args.py does (unknown ones are
an error) and answers GET /system_stats (with the argv it got), GET /queue and POST /free."""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1")
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--reserve-vram", type=float, default=None)
parser.add_argument("--cpu", action="store_true")
parser.add_argument("--enable-manager", action="store_true")
parser.add_argument("--enable-manager-legacy-ui", action="store_true")
parser.add_argument("--preview-method", default="none")
args = parser.parse_args()


class Handler(BaseHTTPRequestHandler):
    def answer(self, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/system_stats":
            self.answer({"system": {"argv": sys.argv[1:]}, "devices": [{"type": "cpu"}]})
        elif self.path == "/queue":
            self.answer({"queue_running": [], "queue_pending": []})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        if self.path == "/free":
            self.answer({})
        else:
            self.send_error(404)


host = "0.0.0.0" if "0.0.0.0" in args.listen.split(",") else args.listen
ThreadingHTTPServer((host, args.port), Handler).serve_forever()
