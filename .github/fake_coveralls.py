"""A stand-in for Coveralls in CI's self-test: answers the Parallel Build Webhook like the
service does and records each request body (one JSON per line) to the file named on the
command line."""

import http.server
import json
import sys

RECORD = sys.argv[2]


class Webhook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(RECORD, "a", encoding="utf-8") as record:
            record.write(json.dumps({"path": self.path, "body": json.loads(body)}) + "\n")
        answer = json.dumps(
            {"done": True, "url": "https://coveralls.io/builds/self-test", "jobs": 2}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Webhook).serve_forever()
