#!/usr/bin/python3
"""A token server for the registry tests (Docker's token auth, as distribution 2.8 checks it).

usage: token_server.py PORT CERT KEY SERVICE ISSUER JWT_LIFETIME ADVERTISED_EXPIRES_IN LOG

Basic `wcb:s3cret` (or the refresh token `refresh-s3cret` by OAuth2 POST) gets what it asks for;
anonymous callers get `pull` only. Each request is logged as one JSON line (user and scopes,
never a secret). JWT_LIFETIME is how long the registry accepts a token; ADVERTISED_EXPIRES_IN is
what the response claims, so a test can make a cached token expire early.
"""
import base64, hashlib, json, os, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

port, cert_path, key_path, service, issuer, lifetime, advertised, log_path = sys.argv[1:9]
lifetime, advertised = int(lifetime), int(advertised)
cert = x509.load_pem_x509_certificate(open(cert_path, "rb").read())
key = load_pem_private_key(open(key_path, "rb").read(), None)
der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
KID = ":".join(s[i:i + 4] for i in range(0, 48, 4))


def b64u(b):
    if isinstance(b, str):
        b = b.encode()
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sign(user, scopes):
    access = []
    for scope in scopes:
        parts = scope.split(":")
        if len(parts) < 3:
            continue
        typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
        if user != "wcb":
            actions = [a for a in actions if a == "pull"]
        access.append({"type": typ, "name": name, "actions": actions})
    now = int(time.time())
    claims = {"iss": issuer, "sub": user or "", "aud": service, "exp": now + lifetime,
              "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
    si = b64u(json.dumps({"typ": "JWT", "alg": "RS256", "kid": KID})) + "." + b64u(json.dumps(claims))
    return si + "." + b64u(key.sign(si.encode(), PKCS1v15(), SHA256()))


class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def answer(self, user, scopes, grant):
        with open(log_path, "a") as f:
            f.write(json.dumps({"user": user, "scopes": scopes, "grant": grant}) + "\n")
        tok = sign(user, scopes)
        body = json.dumps({"token": tok, "access_token": tok, "expires_in": advertised,
                           "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def deny(self):
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        q = urllib.parse.urlparse(self.path)
        params = urllib.parse.parse_qs(q.query)
        scopes = params.get("scope", [])
        user = None
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            if (u, p) != ("wcb", "s3cret"):
                return self.deny()
            user = u
        self.answer(user, scopes, "basic" if user else "anonymous")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        form = urllib.parse.parse_qs(self.rfile.read(n).decode())
        if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != ["refresh-s3cret"]:
            return self.deny()
        scopes = " ".join(form.get("scope", [])).split()
        self.answer("wcb", scopes, "refresh_token")


ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()
