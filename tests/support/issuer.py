"""A small identity provider for tests: a real HTTP server on loopback (a thread running
``http.server``) serving an OpenID Connect discovery document and a JWKS made from keys
generated here, and tokens signed with PyJWT as a provider signs them.

``publish`` chooses which keys the JWKS lists (a rotation publishes a new one), ``fetches``
counts the JWKS requests it answered, and ``stop`` takes it down (connections refused).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

AUDIENCE = "registry-gateway"
REALM = "/realms/test"


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(self.algorithm)
        document = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**document, "kid": self.kid, "use": "sig", "alg": self.algorithm}


def new_key(kid: str, algorithm: str = "RS256") -> SigningKey:
    if algorithm == "RS256":
        private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(algorithm)
    return SigningKey(kid, algorithm, private)


class TestIssuer:
    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self) -> None:
        self.keys: dict[str, SigningKey] = {}
        self.published: list[str] = []
        self.fetches = 0
        self.discoveries = 0
        self._lock = threading.Lock()
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == f"{REALM}/.well-known/openid-configuration":
                    with issuer._lock:
                        issuer.discoveries += 1
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/protocol/openid-connect/certs"}
                elif self.path == f"{REALM}/protocol/openid-connect/certs":
                    with issuer._lock:
                        issuer.fetches += 1
                        body = {"keys": [issuer.keys[kid].jwk() for kid in issuer.published]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}{REALM}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="test issuer", daemon=True)
        self._thread.start()

    def add(self, kid: str, algorithm: str = "RS256", *, publish: bool = True) -> SigningKey:
        key = self.keys[kid] = new_key(kid, algorithm)
        if publish:
            self.publish(*self.published, kid)
        return key

    def publish(self, *kids: str) -> None:
        with self._lock:
            self.published = list(kids)

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "app-1",
            "iat": now,
            "exp": now + 600,
            "scope": "openid profile predict:* read",
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, kid: str = "k1", *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        key = self.keys[kid]
        return jwt.encode(
            self.claims(**claims), key.private, algorithm=key.algorithm, headers={"kid": kid, **(headers or {})}
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
