"""DynamoDB capacity units and SQS billed requests by AWS's rules (`make bench`, `make local`).

The emulators do not bill faithfully: moto answers ReturnConsumedCapacity with a constant per
operation, whatever the item size, and never counts GSI writes; MiniStack sizes PutItem and
transactions right (a 3 KB Put: 3, in a transaction: 6) but bills a 9 KB strongly consistent
GetItem 1 RRU (AWS: 3). So Conveyor meters itself:
`MeteringProxy` sits between the services and the emulator, serialises the writes to each item
(so each write's before and after images are exact), reads every item a write touches before
and after it, and bills it as DynamoDB on-demand would:

- a write costs 1 WRU per started KB of the larger of the item's before and after images (an
  UpdateItem or a replacing PutItem is billed on the larger one), 2 per KB inside
  TransactWriteItems; a write whose condition fails is billed as the write would have been;
- each GSI the write touches costs its own WRU on the projected entry: an insert or a delete
  of the entry, an update when a projected attribute changed, a delete plus an insert when the
  index key changed;
- a read costs 1 RRU per started 4 KB strongly consistent, half that eventually consistent,
  twice that in TransactGetItems; a Query adds its items' sizes up first;
- SQS bills 1 request per started 64 KB of each request's payload.

Sources: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html,
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html (provisioned
throughput considerations), https://aws.amazon.com/sqs/pricing/ (64 KB chunks).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import re
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KB = 1024
SQS_CHUNK = 64 * KB

# us-east-1 list prices (issue 9): on-demand DynamoDB and SQS FIFO, per unit.
PRICE_WRU = 0.625 / 1e6
PRICE_RRU = 0.125 / 1e6
PRICE_SQS_FIFO_REQUEST = 0.50 / 1e6


def _number_size(text: str) -> int:
    """AWS: numbers are up to 38 significant digits; size ~ 1 byte per 2 digits, plus 1."""
    digits = Decimal(text).normalize().as_tuple().digits
    return math.ceil(len(digits) / 2) + 1


def value_size(value: dict[str, Any]) -> int:
    """Size of a DynamoDB JSON attribute value, by the rules of the developer guide."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return _number_size(v)
    if kind == "B":
        import base64

        return len(base64.b64decode(v))
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(_number_size(n) for n in v)
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(e) for k, e in v.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_size(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int, transactional: bool = False) -> int:
    return max(1, math.ceil(size / KB)) * (2 if transactional else 1)


def read_units(size: int, consistent: bool, transactional: bool = False) -> float:
    units = max(1, math.ceil(size / (4 * KB)))
    return units * (2 if transactional else (1.0 if consistent else 0.5))


class Billing:
    """Accumulated units and requests, by "<caller> <operation>" (the caller is the botocore
    app id, AWS_SDK_UA_APP_ID, that LocalSystem gives each process; empty for others)."""

    def __init__(self) -> None:
        self.wru: Counter[str] = Counter()
        self.rru: Counter[str] = Counter()
        self.sqs_billed: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()  # every request, billed or not
        self._lock = threading.Lock()
        self.caller = threading.local()  # set per proxied request

    def add(self, kind: str, operation: str, units: float) -> None:
        who = getattr(self.caller, "name", "")
        with self._lock:
            getattr(self, kind)[f"{who} {operation}".strip()] += units

    def dollars(self, exclude: Callable[[str], bool] = lambda _: False) -> float:
        """What the billed units cost at the list prices, leaving out labels `exclude` picks."""
        with self._lock:
            priced = (
                (self.wru, PRICE_WRU),
                (self.rru, PRICE_RRU),
                (self.sqs_billed, PRICE_SQS_FIFO_REQUEST),
            )
            return sum(
                price * n for units, price in priced for k, n in units.items() if not exclude(k)
            )

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                "wru": dict(self.wru),
                "rru": dict(self.rru),
                "sqs": dict(self.sqs_billed),
                "requests": dict(self.requests),
            }


class _Upstream:
    """The emulator, over one kept-alive connection per proxy thread (a connection per call
    would run the machine out of ephemeral ports under load)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._local = threading.local()

    def call(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, list, bytes]:
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=60
                )
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def dynamodb(self, operation: str, payload: dict[str, Any], auth: dict[str, str]) -> Any:
        headers = {
            **auth,
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": f"DynamoDB_20120810.{operation}",
        }
        status, _, body = self.call("/", json.dumps(payload).encode(), headers)
        return json.loads(body) if status == 200 else {}


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a service stopping mid long poll) is not an error."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class _KeyLocks:
    """One lock per item key, taken in a fixed order: writes to one item are serialised (so
    its before and after images are exact), writes to different items are not."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextlib.contextmanager
    def held(self, keys: list[str]) -> Iterator[None]:
        with self._guard:
            locks = [self._locks.setdefault(k, threading.Lock()) for k in sorted(set(keys))]
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield


def _upstream(url: str) -> _Upstream:
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    return _Upstream(host, int(port))


class MeteringProxy:
    """A loopback HTTP proxy to the emulator that bills every DynamoDB and SQS request.
    `dynamodb_url` is where DynamoDB is served, if not at `upstream_url` too."""

    def __init__(self, upstream_url: str, dynamodb_url: str | None = None) -> None:
        self.upstream = _upstream(upstream_url)
        self.dynamodb = _upstream(dynamodb_url or upstream_url)
        self.billing = Billing()
        self._item_locks = _KeyLocks()
        self._indexes: dict[str, list[tuple[str, list[str], str, list[str]]]] = {}
        self._key_cache: dict[str, list[str]] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body go out in two writes; with Nagle's algorithm on, the
            # second waits for the client's delayed ACK of the first (about 40 ms a response).
            # The upstream side needs nothing: http.client sets TCP_NODELAY itself.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                status, out_headers, out = proxy.forward(self.path, body, headers)
                self.send_response(status)
                for name, value in out_headers:
                    if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- billing ----
    def forward(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, list, bytes]:
        target = headers.get("X-Amz-Target", "")
        service, _, operation = target.partition(".")
        if not target:  # the query protocol (form-encoded, as some SQS clients still speak)
            action = re.search(rb"(?:^|&)Action=(\w+)", body)
            operation = action.group(1).decode() if action else ""
        app = re.search(r"\bapp/(\S+)", headers.get("User-Agent", ""))
        self.billing.caller.name = app.group(1) if app else ""
        self.billing.add("requests", operation or "other", 1)
        if service.startswith("DynamoDB"):
            return self._dynamodb(operation, path, body, headers)
        status, out_headers, out = self.upstream.call(path, body, headers)
        chunks = max(1, math.ceil(max(len(body), len(out)) / SQS_CHUNK))
        self.billing.add("sqs_billed", operation or "sqs", chunks)
        return status, out_headers, out

    def _auth(self, headers: dict[str, str]) -> dict[str, str]:
        # The emulator does not check signatures; a copy of the caller's is good enough.
        return {k: v for k, v in headers.items() if k.lower() in ("authorization", "x-amz-date")}

    def _gsis(
        self, table: str, auth: dict[str, str]
    ) -> list[tuple[str, list[str], str, list[str]]]:
        if table not in self._indexes:
            desc = self.dynamodb.dynamodb("DescribeTable", {"TableName": table}, auth)
            found = []
            for index in desc.get("Table", {}).get("GlobalSecondaryIndexes", []):
                keys = [k["AttributeName"] for k in index["KeySchema"]]
                projection = index["Projection"]
                found.append(
                    (
                        index["IndexName"],
                        keys,
                        projection["ProjectionType"],
                        projection.get("NonKeyAttributes", []),
                    )
                )
            self._indexes[table] = found
        return self._indexes[table]

    def _get(self, table: str, key: dict[str, Any], auth: dict[str, str]) -> dict[str, Any] | None:
        got = self.dynamodb.dynamodb(
            "GetItem", {"TableName": table, "Key": key, "ConsistentRead": True}, auth
        )
        return got.get("Item")

    def _table_key(self, table: str, item: dict[str, Any], auth: dict[str, str]) -> dict[str, Any]:
        desc = self._key_names(table, auth)
        return {k: item[k] for k in desc}

    def _key_names(self, table: str, auth: dict[str, str]) -> list[str]:
        if table not in self._key_cache:
            desc = self.dynamodb.dynamodb("DescribeTable", {"TableName": table}, auth)
            self._key_cache[table] = [k["AttributeName"] for k in desc["Table"]["KeySchema"]]
        return self._key_cache[table]

    def _bill_write(
        self,
        operation: str,
        table: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        transactional: bool,
        auth: dict[str, str],
    ) -> None:
        size = max(item_size(before), item_size(after))
        self.billing.add("wru", operation, write_units(size, transactional))
        key_names = self._key_names(table, auth)
        for name, keys, projection, extra in self._gsis(table, auth):
            entries = [_projected(i, keys, key_names, projection, extra) for i in (before, after)]
            old, new = entries
            if old == new:
                continue
            if old is None or new is None or any(old[k] != new[k] for k in keys):
                touched = [e for e in (old, new) if e is not None]
                for entry in touched:  # an insert, a delete, or a key change (delete + insert)
                    self.billing.add(
                        "wru", f"{operation} gsi:{name}", write_units(item_size(entry))
                    )
            else:
                size = max(item_size(old), item_size(new))
                self.billing.add("wru", f"{operation} gsi:{name}", write_units(size))

    def _dynamodb(
        self, operation: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, list, bytes]:
        request = json.loads(body or b"{}")
        auth = self._auth(headers)
        writes: list[tuple[str, dict[str, Any], bool]] = []  # (table, key, transactional)
        if operation in ("PutItem", "UpdateItem", "DeleteItem"):
            table = request["TableName"]
            key = request.get("Key") or self._table_key(table, request["Item"], auth)
            writes.append((table, key, False))
        elif operation == "TransactWriteItems":
            for entry in request["TransactItems"]:
                ((kind, spec),) = entry.items()
                table = spec["TableName"]
                key = spec.get("Key") or self._table_key(table, spec["Item"], auth)
                if kind == "ConditionCheck":
                    self.billing.add("rru", "TransactWriteItems check", 2)  # 1 RRU x 2
                    continue
                writes.append((table, key, True))
        names = [f"{t}/{json.dumps(k, sort_keys=True)}" for t, k, _ in writes]
        with self._item_locks.held(names):
            befores = [self._get(t, k, auth) for t, k, _ in writes]
            status, out_headers, out = self.dynamodb.call(path, body, headers)
            afters = [self._get(t, k, auth) for t, k, _ in writes]
        for (table, _, transactional), before, after in zip(writes, befores, afters, strict=True):
            self._bill_write(operation, table, before, after, transactional, auth)
        if status == 200:
            self._bill_read(operation, request, json.loads(out or b"{}"))
        return status, out_headers, out

    def _bill_read(self, operation: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        consistent = bool(request.get("ConsistentRead"))
        if operation == "GetItem":
            self.billing.add(
                "rru", operation, read_units(item_size(response.get("Item")), consistent)
            )
        elif operation in ("Query", "Scan"):
            size = sum(item_size(i) for i in response.get("Items", []))
            self.billing.add("rru", operation, read_units(size, consistent))
        elif operation == "BatchGetItem":
            for table, items in response.get("Responses", {}).items():
                spec = request["RequestItems"][table]
                for item in items:
                    units = read_units(item_size(item), bool(spec.get("ConsistentRead")))
                    self.billing.add("rru", operation, units)
        elif operation == "TransactGetItems":
            for entry in response.get("Responses", []):
                self.billing.add(
                    "rru", operation, read_units(item_size(entry.get("Item")), True, True)
                )


def _projected(
    item: dict[str, Any] | None,
    keys: list[str],
    table_keys: list[str],
    projection: str,
    extra: list[str],
) -> dict[str, Any] | None:
    """The index entry of `item` (None if it lacks an index key: sparse index)."""
    if item is None or any(k not in item for k in keys):
        return None
    names = set(keys) | set(table_keys)
    if projection == "ALL":
        return dict(item)
    if projection == "INCLUDE":
        names |= set(extra)
    return {k: v for k, v in item.items() if k in names}
