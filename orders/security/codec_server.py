"""The codec server: decrypts payloads for the Temporal Web UI and ``temporal`` CLI.

It implements Temporal's codec server protocol: ``POST /encode`` and ``POST /decode`` (also
under any prefix, such as ``/default/decode``, since only a URL's last part names the
operation), each taking and answering ``{"payloads": [...]}`` with payloads in protobuf JSON
(metadata values and data base64). The UI and the CLI send ``X-Namespace``; one key ring serves
every namespace here.

Who may call it:

- it listens on loopback only (another address is refused unless a token is set);
- browsers: only pages from the allowed origins (the Temporal UI's, by default
  ``http://localhost:8233`` and ``http://127.0.0.1:8233``); any request from another origin,
  preflight included, is refused with 403;
- with a token (``ORDERS_CODEC_TOKEN``, read from the environment so it never shows in ``ps``),
  every call must carry ``Authorization: Bearer <token>``; the CLI sends it with
  ``--codec-auth "Bearer <token>"``.

Run: ``python -m orders.security.codec_server --port 8234 --allow-origin http://localhost:8233``.
"""

import argparse
import hmac
import ipaddress
import os
import sys
from collections.abc import Awaitable, Callable, Sequence

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from orders.security.codec import DecryptionError, EncryptionCodec
from orders.security.keys import KeyConfigError, load_key_ring

TOKEN_ENV = "ORDERS_CODEC_TOKEN"
"""A bearer token every request must carry; none by default (loopback and CORS only)."""
ORIGINS_ENV = "ORDERS_CODEC_CORS_ORIGINS"
"""Comma-separated origins whose pages may call the server (the Temporal UI's)."""
DEFAULT_PORT = 8234
DEFAULT_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
MAX_BODY_BYTES = 16 * 1024 * 1024
"""Far above what a Temporal history's payloads need; a larger request is refused."""
_ALLOWED_HEADERS = "content-type, x-namespace, authorization"

Handler = Callable[[Request], Awaitable[Response]]


def ui_origins(ui_port: int) -> tuple[str, ...]:
    """The origins the Temporal UI on ``ui_port`` is opened from."""
    return (f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}")


def create_app(
    codec: EncryptionCodec, allowed_origins: Sequence[str], token: str | None = None
) -> FastAPI:
    """The codec server's app: ``/encode`` and ``/decode`` guarded by origin and token."""
    origins = frozenset(origin.rstrip("/") for origin in allowed_origins)
    app = FastAPI(title="Durable orders codec server", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard(request: Request, call_next: Handler) -> Response:
        """Refuse foreign origins and missing tokens; answer preflights; add CORS headers."""
        origin = request.headers.get("origin")
        if origin is not None and origin.rstrip("/") not in origins:
            return JSONResponse(
                {"detail": f"origin {origin} may not call this codec server"}, status_code=403
            )
        cors = _cors_headers(origin) if origin else {}
        if request.method == "OPTIONS":  # a browser's preflight carries no credentials
            return Response(status_code=204, headers=cors)
        if token is not None and not _bearer_matches(request.headers.get("authorization"), token):
            return JSONResponse(
                {"detail": "missing or wrong bearer token"},
                status_code=401,
                headers={**cors, "WWW-Authenticate": "Bearer"},
            )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse({"detail": "request too large"}, status_code=413, headers=cors)
        response = await call_next(request)
        response.headers.update(cors)
        return response

    async def transcode(request: Request, decode: bool) -> Response:
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
        except json_format.ParseError as err:
            return _bad_request(f'expected {{"payloads": [...]}} in protobuf JSON: {err}')
        try:
            if decode:
                result = await codec.decode(payloads.payloads)
            else:
                result = await codec.encode(payloads.payloads)
        except DecryptionError as err:
            return _bad_request(str(err))
        return JSONResponse({"payloads": [_payload_json(payload) for payload in result]})

    async def encode(request: Request) -> Response:
        """Encrypt the payloads under the current key."""
        return await transcode(request, decode=False)

    async def decode(request: Request) -> Response:
        """Decrypt the payloads marked encrypted; others come back unchanged."""
        return await transcode(request, decode=True)

    for path, endpoint in (("encode", encode), ("decode", decode)):
        app.add_api_route(f"/{path}", endpoint, methods=["POST"])
        app.add_api_route(f"/{{prefix:path}}/{path}", endpoint, methods=["POST"])
    return app


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


def _bearer_matches(header: str | None, token: str) -> bool:
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def _bad_request(detail: str) -> Response:
    return JSONResponse({"detail": detail}, status_code=400)


def _payload_json(payload: Payload) -> dict[str, object]:
    return json_format.MessageToDict(payload)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; origins fall back to ``ORDERS_CODEC_CORS_ORIGINS``."""
    parser = argparse.ArgumentParser(
        prog="python -m orders.security.codec_server",
        description="Decrypt payloads for the Temporal Web UI and CLI (Temporal's codec "
        f"server protocol). Keys as for the worker; a bearer token from ${TOKEN_ENV}.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--allow-origin",
        action="append",
        dest="origins",
        metavar="ORIGIN",
        help="an origin whose pages may call the server, such as the Temporal UI's "
        f"(repeatable; default ${ORIGINS_ENV} or {', '.join(DEFAULT_ORIGINS)})",
    )
    args = parser.parse_args(argv)
    if not args.origins:
        configured = os.environ.get(ORIGINS_ENV, "")
        args.origins = [o.strip() for o in configured.split(",") if o.strip()] or list(
            DEFAULT_ORIGINS
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Load the keys, then serve until interrupted."""
    args = parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "").strip() or None
    if not _is_loopback(args.host) and token is None:
        print(
            f"error: refusing to serve decrypted customer data on {args.host} without a token; "
            f"set {TOKEN_ENV} or listen on 127.0.0.1",
            file=sys.stderr,
        )
        return 2
    codec = EncryptionCodec(load_key_ring)
    try:
        ring = codec.key_ring()
    except KeyConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"codec server on http://{args.host}:{args.port} (keys {', '.join(ring.ids)} from "
        f"{ring.source}; origins {', '.join(args.origins)}; "
        f"{'bearer token required' if token else 'no token'})",
        flush=True,
    )
    uvicorn.run(
        create_app(codec, args.origins, token),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
