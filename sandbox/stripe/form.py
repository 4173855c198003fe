"""Stripe's request encoding: form fields in bracket notation, and reading them as parameters.

Stripe's v1 API takes ``application/x-www-form-urlencoded`` bodies (and query strings) whose
names nest with brackets: ``metadata[order_id]=order-1``, ``expand[]=latest_charge`` or, as the
official library sends lists, ``expand[0]=latest_charge``. ``decode`` turns them into nested
dicts and lists; ``Params`` reads them one by one, answering each problem as Stripe does (400
``parameter_missing``, ``parameter_unknown``, ``parameter_invalid_integer``, ... naming the
parameter in bracket notation), and refuses whatever is left unread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request

from sandbox.stripe.errors import invalid_request

MAX_FIELDS = 1000
"""The most form fields one request may carry."""
MAX_STRING_LENGTH = 5000
"""Stripe's longest ordinary string parameter."""
METADATA_MAX_KEYS = 50
METADATA_MAX_KEY_LENGTH = 40
METADATA_MAX_VALUE_LENGTH = 500
MAX_UNIX_TIME = 253_402_300_799
"""The last second of year 9999: the latest time a ``created`` filter can name."""

_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_INTEGER = re.compile(r"^-?[0-9]+$")

Value = str | dict[str, Any] | list[Any]


def _fits(digits: str) -> bool:
    """Whether an integer's text fits in a signed 64-bit integer."""
    return len(digits) <= 20 and -(2**63) <= int(digits) < 2**63


def _segments(name: str) -> list[str]:
    """Split ``a[b][]`` into ``["a", "b", ""]``; a malformed name is a 400."""
    match = _NAME.match(name)
    if match is None:
        raise invalid_request(
            f"Invalid parameter name: {name[:100]!r}.", "parameter_unknown", name[:100]
        )
    head, rest = match.groups()
    return [head, *re.findall(r"\[([^\[\]]*)\]", rest)]


def decode(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest form fields by their bracket names: ``a[b]=1`` -> ``{"a": {"b": "1"}}``.

    ``a[]=x`` appends to a list; ``a[0]=x`` is a dict keyed ``"0"`` that readers of list
    parameters accept as a list. A name that is both a value and a hash is a 400.
    """
    root: dict[str, Any] = {}
    for name, value in pairs:
        parts = _segments(name)
        node: dict[str, Any] | list[Any] = root
        for depth, part in enumerate(parts):
            here = parts[0] + "".join(f"[{p}]" for p in parts[1 : depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if part != "":
                    raise invalid_request(f"Invalid array: {here}.", "parameter_invalid", here)
                if last:
                    node.append(value)
                    break
                child: dict[str, Any] = {}
                node.append(child)
                node = child
                continue
            if last:
                if part in node and not isinstance(node[part], str):
                    raise invalid_request(f"Invalid hash: {here}.", "parameter_invalid", here)
                node[part] = value
                break
            array = parts[depth + 1] == ""
            existing: dict[str, Any] | list[Any] | str | None = node.get(part)
            if existing is None:
                existing = node[part] = [] if array else {}
            elif isinstance(existing, str) or isinstance(existing, list) != array:
                what = "array" if array else "hash"
                raise invalid_request(f"Invalid {what}: {here}.", "parameter_invalid", here)
            node = existing
    return root


async def read_form(request: Request) -> dict[str, Any]:
    """Decode the request's form body (none: no parameters); not UTF-8 or malformed is a 400."""
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError):
        message = (
            "Invalid request: the body must be form-encoded (application/x-www-form-urlencoded) "
            f"UTF-8 with at most {MAX_FIELDS} fields."
        )
        raise invalid_request(message, "parameter_invalid") from None
    return decode(pairs)


def read_query(request: Request) -> dict[str, Any]:
    """Decode the request's query string the same way."""
    pairs = request.query_params.multi_items()
    if len(pairs) > MAX_FIELDS:
        raise invalid_request(f"At most {MAX_FIELDS} query parameters.", "parameter_invalid")
    return decode(pairs)


class Params:
    """Reads decoded parameters one at a time, as Stripe validates them.

    Each reader removes what it read; ``done`` refuses anything left (``parameter_unknown``).
    ``raw`` keeps everything that was sent, for the idempotency fingerprint.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        self.raw = values
        self._left = dict(values)

    def _take(self, name: str, required: bool) -> Value | None:
        value: Value | None = self._left.pop(name, None)
        if value is None and required:
            raise invalid_request(f"Missing required param: {name}.", "parameter_missing", name)
        return value

    def string(
        self,
        name: str,
        *,
        required: bool = False,
        max_length: int = MAX_STRING_LENGTH,
        pattern: str | None = None,
        what: str = "",
    ) -> str | None:
        """A string parameter; ``pattern`` (fullmatch) and ``what`` describe a valid one."""
        value = self._take(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise invalid_request(
                f"Invalid string: {name} must be a string, not a hash or an array.",
                "parameter_invalid_string",
                name,
            )
        if value == "":
            raise invalid_request(
                f"You passed an empty string for '{name}'. We assume empty values are an attempt "
                f"to unset a parameter; however '{name}' cannot be unset. You should remove "
                f"'{name}' from your request or supply a non-empty value.",
                "parameter_invalid_empty",
                name,
            )
        if len(value) > max_length:
            raise invalid_request(
                f"Invalid string: {name} must be at most {max_length} characters long.",
                "parameter_invalid_string",
                name,
            )
        if pattern is not None and not re.fullmatch(pattern, value):
            raise invalid_request(
                f"Invalid {name}: {what or 'not a valid value'}.", "parameter_invalid_string", name
            )
        return value

    def integer(
        self, name: str, *, required: bool = False, minimum: int, maximum: int
    ) -> int | None:
        """An integer parameter within ``minimum`` .. ``maximum``.

        An amount out of bounds is ``amount_too_small`` / ``amount_too_large``, as Stripe says
        it; any other integer out of bounds ``parameter_invalid_integer``.
        """
        value = self._take(name, required)
        if value is None:
            return None
        # Beyond 64 bits is not an integer to Stripe (nor to SQLite).
        if not isinstance(value, str) or not _INTEGER.match(value) or not _fits(value):
            # Unlike Stripe, the value is not echoed: it might be a card number sent by mistake.
            raise invalid_request(
                f"Invalid integer: {name} must be a whole number (64 bits at most).",
                "parameter_invalid_integer",
                name,
            )
        number = int(value)
        amount = name.startswith("amount")
        if number < minimum:
            code = "amount_too_small" if amount else "parameter_invalid_integer"
            message = f"This value must be greater than or equal to {minimum}."
            raise invalid_request(message, code, name)
        if number > maximum:
            code = "amount_too_large" if amount else "parameter_invalid_integer"
            message = f"This value must be less than or equal to {maximum}."
            raise invalid_request(message, code, name)
        return number

    def integer_range(self, name: str, ops: tuple[str, ...]) -> dict[str, int]:
        """A range of unix times: ``name=T`` (exactly T) or ``name[op]=T`` for ``ops``.

        Returns op -> T (``name=T`` as ``gte`` and ``lte`` T); empty when absent. Each T is
        read as an integer from 0 to the end of year 9999, named in bracket notation if wrong.
        """
        value = self._left.pop(name, None)
        if value is None:
            return {}
        if isinstance(value, str):
            exact = Params({name: value}).integer(name, minimum=0, maximum=MAX_UNIX_TIME)
            assert exact is not None
            return {"gte": exact, "lte": exact}
        if not isinstance(value, dict):
            raise invalid_request(
                f"Invalid {name}: an integer or a hash of {', '.join(ops)}.",
                "parameter_invalid",
                name,
            )
        bounds = Params({f"{name}[{op}]": item for op, item in value.items()})
        found: dict[str, int] = {}
        for op in ops:
            read = bounds.integer(f"{name}[{op}]", minimum=0, maximum=MAX_UNIX_TIME)
            if read is not None:
                found[op] = read
        bounds.done()
        return found

    def boolean(self, name: str) -> bool | None:
        """A boolean parameter (``true`` or ``false``)."""
        value = self._take(name, False)
        if value is None:
            return None
        if value not in ("true", "false"):
            raise invalid_request(
                "Invalid boolean: must be one of true or false.", "parameter_invalid_boolean", name
            )
        return value == "true"

    def enum(
        self, name: str, choices: tuple[str, ...], *, default: str | None = None
    ) -> str | None:
        """One of ``choices`` (``default`` when absent)."""
        value = self._take(name, False)
        if value is None:
            return default
        if value not in choices:
            listed = ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 1 else ""
            raise invalid_request(
                f"Invalid {name}: must be one of {listed or choices[0]}",
                "parameter_invalid_string",
                name,
            )
        assert isinstance(value, str)
        return value

    def hash(self, name: str) -> Params | None:
        """A hash parameter (``name[key]=...``) as parameters of its own; None when absent.

        Each is named in bracket notation (``name[key]``); read them, then call its ``done``.
        """
        value = self._take(name, False)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise invalid_request(
                f"Invalid object: {name} must be a hash.", "parameter_invalid", name
            )
        return Params({f"{name}[{key}]": item for key, item in value.items()})

    def strings(self, name: str) -> list[str]:
        """A list of strings (``name[]=a`` or ``name[0]=a``), empty when absent."""
        value = self._take(name, False)
        if value is None:
            return []
        if isinstance(value, dict) and all(key.isdigit() for key in value):
            value = [value[key] for key in sorted(value, key=int)]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise invalid_request(
                f"Invalid array: {name} must be an array of strings.", "parameter_invalid", name
            )
        return list(value)

    def expand(self, allowed: tuple[str, ...]) -> tuple[str, ...]:
        """The ``expand[]`` paths, each one of ``allowed`` (else ``parameter_invalid``)."""
        expand = self.strings("expand")
        for index, path in enumerate(expand):
            if path not in allowed:
                message = f"This property cannot be expanded ({path[:100]})."
                raise invalid_request(message, "parameter_invalid", f"expand[{index}]")
        return tuple(expand)

    def metadata(self, name: str = "metadata") -> dict[str, str]:
        """A metadata hash: at most 50 keys of 40 characters, values of 500 (Stripe's limits).

        ``metadata=`` (empty) is an empty hash.
        """
        value = self._take(name, False)
        if value is None or value == "":
            return {}
        if not isinstance(value, dict):
            raise invalid_request(
                f"Invalid object: {name} must be a hash of keys and values.",
                "parameter_invalid",
                name,
            )
        if len(value) > METADATA_MAX_KEYS:
            raise invalid_request(
                f"Invalid {name}: at most {METADATA_MAX_KEYS} keys.", "parameter_invalid", name
            )
        for key, item in value.items():
            param = f"{name}[{key}]"
            if not key or len(key) > METADATA_MAX_KEY_LENGTH:
                raise invalid_request(
                    f"Metadata keys must be 1 to {METADATA_MAX_KEY_LENGTH} characters long.",
                    "parameter_invalid",
                    param[:100],
                )
            if not isinstance(item, str):
                raise invalid_request(
                    "Metadata values must be strings.", "parameter_invalid_string", param
                )
            if len(item) > METADATA_MAX_VALUE_LENGTH:
                raise invalid_request(
                    f"Metadata values can have up to {METADATA_MAX_VALUE_LENGTH} characters, but "
                    f"you passed in a value that is {len(item)} characters long.",
                    "parameter_invalid_string",
                    param,
                )
        return {key: item for key, item in value.items() if item != ""}

    def done(self) -> None:
        """Refuse the first parameter nobody read: 400 ``parameter_unknown``."""
        for name, value in self._left.items():
            param = name
            while isinstance(value, dict) and value:
                sub, value = next(iter(value.items()))
                param += f"[{sub}]"
            param = param[:100]
            raise invalid_request(
                f"Received unknown parameter: {param}", "parameter_unknown", param
            )
