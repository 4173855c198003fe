"""Cut, from Stripe's published OpenAPI description, what the sandbox's answers are judged by.

Stripe's ``spec3.json`` (or ``spec3.yaml``) from the ``stripe/openapi`` repository is several
megabytes; the contract test needs only the answers of the calls an order makes. This script
keeps, for each of those operations, the schemas of its success and error answers, and every
schema they reach through ``$ref`` (kept under ``components.schemas`` with their own names, so
each ``$ref`` resolves as it does in Stripe's document). Validation keywords are kept verbatim;
prose (``description``) and Stripe's vendor extensions (``x-...``, which carry no validation
rule) are dropped to keep the file small.

Usage (``yaml`` is needed only for a YAML document)::

    cd tests/contracts/stripe && python extract.py SPEC3_FILE "SOURCE NOTE" > schemas.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = (
    ("post", "/v1/payment_intents"),
    ("get", "/v1/payment_intents/{intent}"),
    ("get", "/v1/payment_intents"),
    ("post", "/v1/payment_intents/{intent}/confirm"),
    ("post", "/v1/payment_intents/{intent}/capture"),
    ("post", "/v1/payment_intents/{intent}/cancel"),
    ("get", "/v1/payment_intents/search"),
    ("post", "/v1/refunds"),
    ("get", "/v1/refunds/{refund}"),
    ("get", "/v1/refunds"),
    ("get", "/v1/charges"),
)
"""The calls an order makes (``activities/payment.py``), and the lists the contract tests count
its effects with (``tests/test_stripe_contract.py``), as Stripe's document names them."""

SCHEMA_PREFIX = "#/components/schemas/"
MEDIA_TYPE = "application/json"


def load(path: Path) -> dict[str, Any]:
    """Stripe's document from its JSON or YAML file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        loaded: dict[str, Any] = yaml.load(
            text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
        return loaded
    parsed: dict[str, Any] = json.loads(text)
    return parsed


def stripped(node: Any, in_properties: bool = False) -> Any:
    """``node`` without prose and vendor extensions (a property named ``description`` stays)."""
    if isinstance(node, list):
        return [stripped(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if not in_properties and (key == "description" or key.startswith("x-")):
            continue
        kept[key] = stripped(value, in_properties=key == "properties" and not in_properties)
    return kept


def refs(node: Any) -> set[str]:
    """The schema names ``node`` refers to (vendor extensions are not followed)."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= refs(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_PREFIX):
                found.add(value.removeprefix(SCHEMA_PREFIX))
            else:
                found |= refs(value)
    return found


def responses(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each operation's answer schemas by status (``200``, ``default`` for errors)."""
    answers: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        operation = spec["paths"][path][method]
        answers[f"{method.upper()} {path}"] = {
            status: stripped(response["content"][MEDIA_TYPE]["schema"])
            for status, response in operation["responses"].items()
        }
    return answers


def closure(spec: dict[str, Any], roots: set[str]) -> dict[str, Any]:
    """The named schemas reachable from ``roots``, stripped, sorted by name."""
    schemas = spec["components"]["schemas"]
    seen: dict[str, Any] = {}
    pending = set(roots)
    while pending:
        name = pending.pop()
        seen[name] = stripped(schemas[name])
        pending |= refs(seen[name]) - seen.keys()
    return dict(sorted(seen.items()))


def extract(spec: dict[str, Any], source: str) -> dict[str, Any]:
    """The document the contract test loads: source, API version, operations and schemas."""
    operations = responses(spec)
    return {
        "source": source,
        "api_version": spec["info"]["version"],
        "openapi": spec["openapi"],
        "operations": operations,
        "components": {"schemas": closure(spec, refs(operations))},
    }


def main(argv: list[str]) -> int:
    """Print the extract of the document named in ``argv`` (see the module's usage)."""
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    document = extract(load(Path(argv[1])), argv[2])
    json.dump(document, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
