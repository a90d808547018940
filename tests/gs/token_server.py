"""A stand-in for Google's OAuth 2.0 token endpoint, for tests/gs.rs.

Usage: token_server.py PORT PUBLIC_KEY_PEM LOG_FILE

Answers `POST /token` as Google does. The JWT-bearer grant: the
assertion's RS256 signature is checked against PUBLIC_KEY_PEM (with the
openssl command line), and its claims (aud = this endpoint's URL, the
devstorage scope, a one-hour lifetime). A good assertion gets an access
token and its claims are appended to LOG_FILE (one JSON line); anything
else gets Google's `invalid_grant` answer with HTTP 400. The
refresh-token grant (gcloud's user credentials): REFRESH_TOKEN is the one
good token, and its client_id is logged as `{"client_id": ...}`.
"""

import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT = int(sys.argv[1])
PUBLIC_KEY = sys.argv[2]
LOG = sys.argv[3]
SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
REFRESH_TOKEN = "1//sluice-test-refresh-token"


def b64(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def signature_ok(signed, signature):
    with tempfile.NamedTemporaryFile() as data, tempfile.NamedTemporaryFile() as sig:
        data.write(signed)
        data.flush()
        sig.write(signature)
        sig.flush()
        check = ["openssl", "dgst", "-sha256", "-verify", PUBLIC_KEY, "-signature", sig.name, data.name]
        return subprocess.run(check, capture_output=True).returncode == 0


def problem(form, audience):
    """What is wrong with the request, or None."""
    if form.get("grant_type") == ["refresh_token"]:
        if form.get("refresh_token") != [REFRESH_TOKEN] or not form.get("client_secret"):
            return "Token has been expired or revoked."
        return None
    if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
        return "unsupported grant_type"
    parts = form.get("assertion", [""])[0].split(".")
    if len(parts) != 3:
        return "the assertion is not a JWT"
    header, claims = json.loads(b64(parts[0])), json.loads(b64(parts[1]))
    if header.get("alg") != "RS256":
        return "alg is not RS256"
    if not signature_ok((parts[0] + "." + parts[1]).encode(), b64(parts[2])):
        return "Invalid JWT Signature."
    now = time.time()
    if claims.get("aud") != audience or claims.get("scope") != SCOPE:
        return "wrong aud or scope"
    if not (claims["iat"] - 300 <= now <= claims["exp"] and claims["exp"] - claims["iat"] <= 3600):
        return "Invalid JWT: token must be a short-lived token"
    return None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        error = problem(form, "http://127.0.0.1:%d%s" % (PORT, self.path))
        if error is None:
            if "assertion" in form:
                logged = json.loads(b64(form["assertion"][0].split(".")[1]))
            else:
                logged = {"client_id": form["client_id"][0]}
            with open(LOG, "a") as log:
                log.write(json.dumps(logged) + "\n")
            status, body = 200, {"access_token": "ya29.test-token", "expires_in": 3599, "token_type": "Bearer"}
        else:
            status, body = 400, {"error": "invalid_grant", "error_description": error}
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
