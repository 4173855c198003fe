"""Payload encryption keys: where they come from, how they rotate.

Keys are never in the repository. A process takes them, once, from the first of:

1. ``ORDERS_CODEC_KEYS``: ``kid1:BASE64KEY,kid0:BASE64KEY`` (commas or newlines between keys);
2. ``ORDERS_CODEC_KEY_FILE``: a file of keys, JSON (``{"keys": [{"id": "kid1", "key":
   "BASE64KEY"}, ...]}``) or one ``kid:BASE64KEY`` per line (``#`` starts a comment);
3. the local stack's key file, ``data/codec-keys.json`` in the checkout, which ``./scripts/run``
   generates on its first run (mode 0600) and reuses after. It is read only when neither
   variable is set, so a production process never falls back to it by accident: set one of the
   variables there.

In every source the FIRST key is the current one: payloads are encrypted with it, and any
listed key decrypts. Each key is 32 random bytes (AES-256), base64 encoded, under an id of
letters, digits, ``.``, ``_`` or ``-``. Rotation adds a new key in front and keeps the old ones
for reading what they encrypted (``python -m orders.security.keys rotate``).
"""

import argparse
import base64
import binascii
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from orders.security.private_files import write_private_file

KEYS_ENV = "ORDERS_CODEC_KEYS"
"""Keys inline: ``kid1:BASE64KEY,kid0:BASE64KEY``, the first is current."""
KEY_FILE_ENV = "ORDERS_CODEC_KEY_FILE"
"""Path of a key file (JSON or ``kid:BASE64KEY`` lines), the first key is current."""
LOCAL_KEY_FILE_NAME = "codec-keys.json"
"""The key file the local stack generates in its data folder."""
LOCAL_KEY_FILE = Path(__file__).resolve().parents[2] / "data" / LOCAL_KEY_FILE_NAME
"""The key file of ``./scripts/run``'s stack (its default data folder is ``./data``)."""
KEY_BYTES = 32
"""AES-256."""

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

HOW_TO_SET_KEYS = (
    f"Set {KEYS_ENV}=kid:BASE64KEY (32 random bytes, base64; "
    f"`python -m orders.security.keys generate` prints one) or {KEY_FILE_ENV}=/path/to/keys.json; "
    "the local stack (./scripts/run) generates data/codec-keys.json, which starter.py finds by "
    f"itself; a stack run with --data-dir DIR prints the line to use: export {KEY_FILE_ENV}="
    f"DIR/{LOCAL_KEY_FILE_NAME}."
)


class KeyConfigError(Exception):
    """The encryption keys are missing or malformed; the message says how to fix it."""


@dataclass(frozen=True)
class CodecKey:
    """One AES-256 key and the id stored beside every payload it encrypts."""

    key_id: str
    secret: bytes

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.key_id):
            raise KeyConfigError(
                f"key id {self.key_id!r} is invalid: use 1 to 64 letters, digits, '.', '_' or '-'"
            )
        if len(self.secret) != KEY_BYTES:
            raise KeyConfigError(
                f"key {self.key_id!r} has {len(self.secret)} bytes; AES-256 needs {KEY_BYTES} "
                "(base64 of 32 random bytes, as `python -m orders.security.keys generate` prints)"
            )

    def __repr__(self) -> str:
        return f"CodecKey(key_id={self.key_id!r}, secret=<hidden>)"

    def encoded(self) -> str:
        """The key as ``kid:BASE64KEY``, the form ``ORDERS_CODEC_KEYS`` takes."""
        return f"{self.key_id}:{base64.b64encode(self.secret).decode()}"


@dataclass(frozen=True)
class KeyRing:
    """The keys a process knows: the first encrypts, any of them decrypts."""

    keys: tuple[CodecKey, ...]
    source: str = "keys given in code"
    """Where the keys came from, for error messages (never the keys themselves)."""

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyConfigError(f"no keys in {self.source}. {HOW_TO_SET_KEYS}")
        ids = [key.key_id for key in self.keys]
        if duplicates := sorted({key_id for key_id in ids if ids.count(key_id) > 1}):
            raise KeyConfigError(f"key id(s) {', '.join(duplicates)} listed twice in {self.source}")

    @property
    def current(self) -> CodecKey:
        """The key new payloads are encrypted with."""
        return self.keys[0]

    @property
    def ids(self) -> tuple[str, ...]:
        """Every key id, current first."""
        return tuple(key.key_id for key in self.keys)

    def find(self, key_id: str) -> CodecKey | None:
        """The key with this id, if this ring has it."""
        return next((key for key in self.keys if key.key_id == key_id), None)

    def rotated(self, new_key: CodecKey | None = None) -> "KeyRing":
        """A ring with ``new_key`` (a fresh one by default) current and every old key kept."""
        return KeyRing((new_key or generate_key(), *self.keys), self.source)


def generate_key(key_id: str | None = None) -> CodecKey:
    """A new random key; its id defaults to the date and a random suffix (``k20261101-3fa2``)."""
    key_id = key_id or f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
    return CodecKey(key_id, secrets.token_bytes(KEY_BYTES))


def parse_key(entry: str, source: str) -> CodecKey:
    """One ``kid:BASE64KEY`` entry."""
    key_id, sep, encoded = entry.strip().partition(":")
    if not sep or not key_id.strip() or not encoded.strip():
        raise KeyConfigError(f"{source}: expected kid:BASE64KEY, got an entry without both parts")
    return _key(key_id.strip(), encoded.strip(), source)


def parse_keys(text: str, source: str = KEYS_ENV) -> KeyRing:
    """Keys as ``kid:BASE64KEY`` entries separated by commas or newlines; ``#`` comments."""
    entries = [
        part
        for line in text.splitlines()
        for part in line.split("#", 1)[0].split(",")
        if part.strip()
    ]
    return KeyRing(tuple(parse_key(entry, source) for entry in entries), source)


def read_key_file(path: Path) -> KeyRing:
    """A key file: JSON ``{"keys": [{"id": ..., "key": ...}]}`` (or that list), or lines."""
    source = f"key file {path}"
    try:
        text = path.read_text()
    except OSError as err:
        raise KeyConfigError(f"cannot read {source}: {err.strerror or err}") from err
    if not text.lstrip().startswith(("{", "[")):
        return parse_keys(text, source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise KeyConfigError(f"{source} is not valid JSON: {err.msg} (line {err.lineno})") from err
    entries = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise KeyConfigError(f'{source}: expected {{"keys": [{{"id": ..., "key": ...}}, ...]}}')
    keys = []
    for index, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("id"), str)
            and isinstance(entry.get("key"), str)
        ):
            raise KeyConfigError(f'{source}: entry {index} needs string fields "id" and "key"')
        keys.append(_key(entry["id"], entry["key"], source))
    return KeyRing(tuple(keys), source)


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Write ``ring`` as a JSON key file readable by its owner only (mode 0600), atomically."""
    document = {
        "note": "Payload encryption keys. The first is current; keep old ones to read old data. "
        "Never commit this file.",
        "keys": [
            {"id": key.key_id, "key": base64.b64encode(key.secret).decode()} for key in ring.keys
        ],
    }
    write_private_file(path, json.dumps(document, indent=2) + "\n")


def ensure_key_file(path: Path) -> Path:
    """The key file at ``path``, generated with one new key (mode 0600) if it does not exist."""
    if not path.exists():
        write_key_file(path, KeyRing((generate_key(),), f"key file {path}"))
    read_key_file(path)  # a broken file fails here, where its path is known
    return path


def keys_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``ORDERS_CODEC_KEYS`` or ``ORDERS_CODEC_KEY_FILE`` is set."""
    env = os.environ if environ is None else environ
    return bool(env.get(KEYS_ENV, "").strip() or env.get(KEY_FILE_ENV, "").strip())


def load_key_ring(
    environ: Mapping[str, str] | None = None, local_key_file: Path = LOCAL_KEY_FILE
) -> KeyRing:
    """The process's keys: from the environment, a key file, or the local stack's key file."""
    env = os.environ if environ is None else environ
    if inline := env.get(KEYS_ENV, "").strip():
        return parse_keys(inline, KEYS_ENV)
    if file_name := env.get(KEY_FILE_ENV, "").strip():
        return read_key_file(Path(file_name).expanduser())
    if local_key_file.exists():
        return read_key_file(local_key_file)
    raise KeyConfigError(
        f"no payload encryption key is configured: customer data in Temporal is encrypted. "
        f"{HOW_TO_SET_KEYS}"
    )


def _key(key_id: str, encoded: str, source: str) -> CodecKey:
    try:
        secret = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{source}: key {key_id!r} is not valid base64") from None
    return CodecKey(key_id, secret)


def _configured_file(explicit: Path | None) -> Path:
    if explicit:
        return explicit
    if name := os.environ.get(KEY_FILE_ENV, "").strip():
        return Path(name).expanduser()
    return LOCAL_KEY_FILE


def main(argv: Sequence[str] | None = None) -> int:
    """``generate``: print a new key; ``rotate``: add a new current key to a key file."""
    parser = argparse.ArgumentParser(
        prog="python -m orders.security.keys", description="Payload encryption keys."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("generate", help="print a new key as kid:BASE64KEY")
    rotate = commands.add_parser(
        "rotate", help="put a new current key in front of a key file's keys (old ones kept)"
    )
    rotate.add_argument(
        "--file",
        type=Path,
        help=f"the key file (default: ${KEY_FILE_ENV}, else {LOCAL_KEY_FILE})",
    )
    rotate.add_argument("--key-id", help="id of the new key (default: date and random suffix)")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            print(generate_key().encoded())
            return 0
        path = _configured_file(args.file)
        ring = read_key_file(path).rotated(generate_key(args.key_id))
        write_key_file(path, ring)
    except KeyConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"{path}: new current key {ring.current.key_id}; kept {', '.join(ring.ids[1:])} for "
        "decrypting. Restart the codec server and the workers to use it."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
