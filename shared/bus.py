"""The one NATS helper: connection options, idempotent JetStream topology, graceful shutdown.

Services call :func:`connect` with a :class:`NatsConfig` built from their flags, then :func:`ensure_topology`
(idempotent: every service may call it at start-up, in any order, any number of replicas at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import ssl
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from shared import subjects
from shared.config import flag, positive_float, redact_url
from shared.discovery import find_nats_url
from shared.version import version

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Errors that mean "NATS is unavailable right now": retry later, never treat the input as bad.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, asyncio.TimeoutError, OSError)
#: JetStream's publish-dedupe window (Nats-Msg-Id); the ingest KV record covers restarts beyond it.
DUPLICATE_WINDOW_SECONDS = 120.0


@dataclass(frozen=True)
class NatsConfig:
    servers: list[str]
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 5.0
    replicas: int = 1

    def display(self) -> str:
        """Server list safe to log: credentials in URLs are masked."""
        return ",".join(redact_url(s) for s in self.servers)


def add_nats_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("NATS connection")
    flag(
        group,
        "--nats-url",
        env="NATS_URL",
        default=None,
        help="NATS server URL(s), comma-separated (default: the running 'transcode-energy up', else "
        "nats://127.0.0.1:4222)",
    )
    flag(group, "--nats-user", env="NATS_USER", default=None, help="NATS user name")
    flag(group, "--nats-password", env="NATS_PASSWORD", default=None, help="NATS password", secret=True)
    flag(group, "--nats-token", env="NATS_TOKEN", default=None, help="NATS auth token", secret=True)
    flag(group, "--nats-creds", env="NATS_CREDS", default=None, help="NATS credentials (.creds) file")
    flag(group, "--nats-tls-ca", env="NATS_TLS_CA", default=None, help="CA bundle to verify the NATS server")
    flag(
        group, "--nats-tls-cert", env="NATS_TLS_CERT", default=None, help="client certificate for mutual TLS"
    )
    flag(group, "--nats-tls-key", env="NATS_TLS_KEY", default=None, help="client key for mutual TLS")
    flag(
        group,
        "--nats-connect-timeout",
        env="NATS_CONNECT_TIMEOUT",
        default=5.0,
        type=positive_float,
        help="seconds to wait for each connection attempt",
    )
    flag(
        group,
        "--js-replicas",
        env="JS_REPLICAS",
        default=1,
        type=int,
        help="replicas for streams and buckets this service creates (3 on a NATS cluster)",
    )


def nats_config_from_args(args: argparse.Namespace) -> NatsConfig:
    url, _ = find_nats_url(args.nats_url)
    return NatsConfig(
        servers=[s.strip() for s in url.split(",") if s.strip()],
        user=args.nats_user,
        password=args.nats_password,
        token=args.nats_token,
        creds_file=args.nats_creds,
        tls_ca=args.nats_tls_ca,
        tls_cert=args.nats_tls_cert,
        tls_key=args.nats_tls_key,
        connect_timeout=args.nats_connect_timeout,
        replicas=args.js_replicas,
    )


def _tls_context(cfg: NatsConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca)
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    return ctx


async def connect(
    cfg: NatsConfig, name: str, *, max_reconnect_attempts: int = -1, quiet: bool = False
) -> NATS:
    """Connect with reconnects forever (a NATS outage pauses work; it must not end the process).
    ``quiet``: a one-shot client that reports failures itself (no connection log lines)."""

    async def on_error(exc: Exception) -> None:
        if not quiet:
            log.warning("NATS error: %s", type(exc).__name__ if cfg.password or cfg.token else exc)

    client: list[NATS] = []

    async def on_disconnected() -> None:
        # A clean stop (drain, close) disconnects too: that is no warning.
        if quiet or (client and (client[0].is_closed or client[0].is_draining)):
            return
        log.warning("disconnected from NATS")

    async def on_reconnected() -> None:
        log.info("reconnected to NATS")
        if client:
            for hook in list(_RECONNECT_HOOKS.get(client[0], ())):
                try:
                    hook()
                except Exception:  # one hook must not keep the others from running
                    log.exception("reconnect hook failed")

    options: dict[str, Any] = {
        "servers": cfg.servers,
        "name": name,
        "connect_timeout": cfg.connect_timeout,
        "max_reconnect_attempts": max_reconnect_attempts,
        "reconnect_time_wait": 1,
        "allow_reconnect": max_reconnect_attempts != 0,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
    }
    if cfg.user:
        options["user"] = cfg.user
    if cfg.password:
        options["password"] = cfg.password
    if cfg.token:
        options["token"] = cfg.token
    if cfg.creds_file:
        options["user_credentials"] = cfg.creds_file
    tls = _tls_context(cfg)
    if tls is not None:
        options["tls"] = tls
    nc = await nats.connect(**options)
    client.append(nc)
    version = nc.connected_server_version
    if (version.major, version.minor) < MIN_SERVER_VERSION:
        await nc.close()
        wanted = ".".join(map(str, MIN_SERVER_VERSION))
        raise ServerTooOldError(
            f"the NATS server at {cfg.display()} is nats-server {version.major}.{version.minor}; transcode-energy needs {wanted} or "
            "newer (it reads runs with JetStream's batched direct gets)"
        )
    if not quiet:
        log.info("connected to NATS at %s", cfg.display())
    return nc


#: Oldest nats-server the services work with: batched direct gets (shared/directget.py) came in 2.11.
MIN_SERVER_VERSION = (2, 11)


class ServerTooOldError(RuntimeError):
    """The NATS server lacks a JetStream feature the services rely on."""


#: What each client re-creates after a reconnect (see :func:`on_reconnect`).
_RECONNECT_HOOKS: weakref.WeakKeyDictionary[NATS, list[Callable[[], None]]] = weakref.WeakKeyDictionary()


def on_reconnect(nc: NATS, hook: Callable[[], None]) -> Callable[[], None]:
    """Call ``hook`` (quick and synchronous: it schedules its own work) each time ``nc`` reconnects; returns
    the function that removes it. Only clients made by :func:`connect` report reconnects.

    The NATS client replays core subscriptions by itself, but what lives in the server's memory is gone after
    a restart: pull requests in flight and ordered (ephemeral, memory) consumers. Waiting for them to time out
    costs up to a pull request's life or two missed idle heartbeats; reacting to the reconnect costs nothing
    while idle.
    """
    hooks = _RECONNECT_HOOKS.setdefault(nc, [])
    hooks.append(hook)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            hooks.remove(hook)

    return remove


# ---------------------------------------------------------------------------------------------------------
# Retrying while JetStream is not ready
# ---------------------------------------------------------------------------------------------------------

#: How long start-up waits for JetStream to accept the topology (a cluster may still be electing leaders).
TOPOLOGY_RETRY_SECONDS = 60.0
#: Answers that mean "JetStream is not ready yet" (no meta leader, stream leader being elected, restarting).
NOT_READY_ERRORS: tuple[type[BaseException], ...] = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
)


async def retry_not_ready(
    what: str, operation: Callable[[], Awaitable[T]], *, budget: float = TOPOLOGY_RETRY_SECONDS
) -> T:
    """``await operation()``, retried with backoff (0.25 s doubling to 5 s) for up to ``budget`` seconds while
    JetStream answers with timeouts or 'unavailable'; the last error is raised once the budget is spent. Every
    start-up step that talks to JetStream goes through here."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    delay = 0.25
    while True:
        try:
            return await operation()
        except NOT_READY_ERRORS as exc:
            if loop.time() + delay > deadline:
                raise
            log.warning("JetStream not ready (%s); retrying %s in %.1fs", type(exc).__name__, what, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


# ---------------------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------------------


def stream_configs(replicas: int = 1) -> list[js_api.StreamConfig]:
    """Every stream of the system. Limits retention: other tools may attach their own consumers."""
    common: dict[str, Any] = {
        "retention": js_api.RetentionPolicy.LIMITS,
        "storage": js_api.StorageType.FILE,
        "num_replicas": replicas,
        "duplicate_window": DUPLICATE_WINDOW_SECONDS,
        "allow_direct": True,
    }
    return [
        # One message per subject: a re-published scenario or manifest replaces the old copy, so the stream
        # never holds two versions of the same thing.
        js_api.StreamConfig(
            name=subjects.INGEST_STREAM,
            subjects=subjects.INGEST_STREAM_SUBJECTS,
            max_msgs_per_subject=1,
            description="Ingested runs: scenarios and run manifests",
            **common,
        ),
        js_api.StreamConfig(
            name=subjects.RESULTS_STREAM,
            subjects=subjects.RESULTS_STREAM_SUBJECTS,
            max_msgs_per_subject=1,
            description="Computed results per run and worker kind",
            **common,
        ),
        js_api.StreamConfig(
            name=subjects.EVENTS_STREAM,
            subjects=subjects.EVENTS_STREAM_SUBJECTS,
            max_age=30 * 24 * 3600.0,
            max_msgs=100_000,
            description="Errors and pipeline events",
            **common,
        ),
    ]


async def ensure_stream(js: JetStreamContext, config: js_api.StreamConfig) -> js_api.StreamInfo:
    """Create the stream, or bring an existing one to this configuration."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            return await js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # Another replica created it between our lookup and our create.
            pass
    return await js.update_stream(config)


class BucketUpdateError(RuntimeError):
    """The server refused to bring an existing KV bucket to the requested settings (e.g. R3 on one node)."""


async def ensure_kv(
    js: JetStreamContext, bucket: str, *, history: int = 1, replicas: int = 1, max_bytes: int | None = None
) -> KeyValue:
    """:func:`_ensure_kv`, retried while JetStream is not ready."""
    return await retry_not_ready(
        f"KV bucket {bucket}",
        lambda: _ensure_kv(js, bucket, history=history, replicas=replicas, max_bytes=max_bytes),
    )


async def _ensure_kv(
    js: JetStreamContext, bucket: str, *, history: int, replicas: int, max_bytes: int | None
) -> KeyValue:
    """Create the bucket, or bring an existing one to ``history`` and ``replicas`` (and ``max_bytes`` when
    given; ``None`` keeps whatever limit the bucket has).

    Buckets follow ``JS_REPLICAS`` like the streams do: a deployment that grows from one NATS node to three
    must not keep its KV state on a single replica because the bucket happened to exist already. A bucket is
    the stream ``KV_<bucket>``, so the update starts from that stream's current configuration and changes
    only the requested fields (TTL, storage, value size and the KV flags stay as they are).
    """
    try:
        kv = await js.key_value(bucket)
    except BucketNotFoundError:
        return await js.create_key_value(
            js_api.KeyValueConfig(bucket=bucket, history=history, replicas=replicas, max_bytes=max_bytes)
        )
    stream = f"KV_{bucket}"
    current = (await js.stream_info(stream)).config
    wanted = {"num_replicas": replicas, "max_msgs_per_subject": history}
    if max_bytes is not None:
        wanted["max_bytes"] = max_bytes
    if all(getattr(current, name) == value for name, value in wanted.items()):
        return kv
    try:
        await js.update_stream(current.evolve(**wanted))
    except nats.js.errors.APIError as exc:
        # Not transient: retrying cannot give a single-node server a third replica. Say which bucket and
        # what was asked, so the operator can fix JS_REPLICAS or the cluster.
        raise BucketUpdateError(
            f"KV bucket {bucket!r} (stream {stream}): the server refused to change "
            f"replicas {current.num_replicas} -> {replicas}, history {current.max_msgs_per_subject} -> "
            f"{history}, max_bytes {current.max_bytes} -> {wanted.get('max_bytes', current.max_bytes)}: "
            f"{exc.description or exc}"
        ) from exc
    log.info("updated KV bucket %s: replicas=%s history=%s", bucket, replicas, history)
    return kv


async def ensure_pull_consumer(
    js: JetStreamContext,
    stream: str,
    durable: str,
    filter_subject: str | Sequence[str],
    *,
    ack_wait: float = 120.0,
    max_deliver: int = 10,
) -> None:
    """A durable pull consumer shared by every replica of one worker type, so replicas split the work; one
    subject filter or several. An existing consumer is brought to this configuration. Retried while
    JetStream is not ready."""
    filters = [filter_subject] if isinstance(filter_subject, str) else list(filter_subject)
    config = js_api.ConsumerConfig(
        durable_name=durable,
        filter_subject=filters[0] if len(filters) == 1 else None,
        filter_subjects=filters if len(filters) > 1 else None,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
    )
    await retry_not_ready(f"consumer {durable}", lambda: js.add_consumer(stream, config))


async def ensure_topology(js: JetStreamContext, replicas: int = 1) -> None:
    """Every stream, created or brought to this configuration. Retried with backoff while JetStream is not
    ready (a cluster electing its meta leader answers with timeouts or 'unavailable')."""

    async def create() -> None:
        for config in stream_configs(replicas):
            await ensure_stream(js, config)

    await retry_not_ready("the topology", create)


class PullRequests:
    """The pull requests one client keeps open on a JetStream consumer, all answered on one inbox, and how
    many messages they still owe: the bookkeeping of a continuous pull (nats-py pulls one ``fetch`` at a
    time). The worker's durable consumer and the replays' ephemeral ones both pull this way."""

    #: What :meth:`take` found: a message of the stream, a status that ended a request (or a heartbeat), or the
    #: server saying the consumer is gone (409 "Consumer Deleted", or 503: nothing answers its subject).
    DELIVERY, STATUS, GONE = "delivery", "status", "gone"

    def __init__(self, nc: NATS, stream: str, consumer: str, inbox: str, expires_s: float) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self.inbox = inbox
        self.expires_s = expires_s
        #: Messages asked for and not yet delivered (nor given up by an ended request).
        self.owed = 0

    async def ask(self, batch: int) -> None:
        """One more request for up to ``batch`` messages, open for ``expires_s``. NATS errors are raised (the
        request then counts for nothing)."""
        self.owed += batch  # before the await: its first answer may be handled before publish returns
        try:
            request = {"batch": batch, "expires": int(self.expires_s * 1e9)}
            await self.nc.publish(self.subject, json.dumps(request).encode(), reply=self.inbox)
        except BaseException:
            self.owed -= batch
            raise

    def take(self, msg: Msg) -> str:
        """Account for one message on the inbox; says what it was."""
        headers = msg.headers or {}
        if msg.reply or "Status" not in headers:
            self.owed = max(0, self.owed - 1)
            return self.DELIVERY
        status = headers["Status"]
        if status == "100":
            return self.STATUS  # a heartbeat (none is asked for)
        if status == "503" or (status == "409" and "deleted" in str(headers.get("Description", "")).lower()):
            self.owed = 0
            return self.GONE
        # 408: a request expired; 409: it ended otherwise. Either says how much it still owed.
        owed = headers.get("Nats-Pending-Messages")
        self.owed = max(0, self.owed - int(owed)) if owed else 0
        return self.STATUS

    def forget(self) -> None:
        """No request is open any more (a restarted server forgot them, or none answered in time)."""
        self.owed = 0


class OrderedReplay:
    """Replays ``subject`` from its first message into ``handler``, in stream order, and survives server
    restarts.

    It is an ephemeral pull consumer without acks, pulled continuously: one pull request asks for up to
    ``BATCH`` messages and stays open for ``PULL_EXPIRES_S``, and the next is sent once fewer than half of
    what was asked for is still to come. A burst thus arrives without a request (or an ack) per message, and
    an idle replay wakes once per ``PULL_EXPIRES_S``. (nats-py's ordered push consumer keeps a flow-control
    task waking four times a second per subscription; its ``fetch`` sends one or two requests per batch and
    waits on timers.)

    The replay keeps its own place (the stream sequence of the last message handled), which is why the
    consumer needs no acks: on every reconnect, and when the server says the consumer is gone, it is created
    again from the next sequence, so nothing is missed and nothing is handled twice. Creating it is retried
    while JetStream is not ready. ``handler`` is called for one message at a time; an exception it raises is
    logged and the replay goes on with the next message."""

    #: How long one pull request stays open (an idle replay sends one per this many seconds).
    PULL_EXPIRES_S = 60.0
    #: Messages asked for per pull request.
    BATCH = 256

    def __init__(
        self, nc: NATS, subject: str, handler: Callable[[Msg], Awaitable[None]], *, name: str | None = None
    ) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.subject = subject
        self.handler = handler
        self.name = name or subject
        #: Stream sequence of the last message handled (0: none yet).
        self.last_seq = 0
        self.stream: str | None = None
        self.consumer: str | None = None
        self.sub: Subscription | None = None
        #: Counts subscriptions: a delivery to one that has been replaced is dropped.
        self._subscription = 0
        self._pulls: PullRequests | None = None
        self._lock = asyncio.Lock()
        self._remove_hook: Callable[[], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def _subscribe(self) -> None:
        if self.stream is None:
            self.stream = await self.js.find_stream_name_by_subject(self.subject)
        config = js_api.ConsumerConfig(
            filter_subject=self.subject,
            deliver_policy=(
                js_api.DeliverPolicy.BY_START_SEQUENCE if self.last_seq else js_api.DeliverPolicy.ALL
            ),
            opt_start_seq=self.last_seq + 1 if self.last_seq else None,
            ack_policy=js_api.AckPolicy.NONE,
            inactive_threshold=300.0,
            mem_storage=True,
        )
        info = await self.js.add_consumer(self.stream, config)
        self.consumer = info.name
        self._subscription += 1
        this = self._subscription
        inbox = self.nc.new_inbox()
        pulls = self._pulls = PullRequests(self.nc, self.stream, info.name, inbox, self.PULL_EXPIRES_S)

        async def deliver(msg: Msg) -> None:
            if this == self._subscription and not self._closed:
                await self._on_delivery(pulls, msg)

        self.sub = await self.nc.subscribe(inbox, cb=deliver)
        await self._pull(pulls)

    async def _pull(self, pulls: PullRequests) -> None:
        with contextlib.suppress(*TRANSIENT_ERRORS):  # a reconnect subscribes and pulls again
            await pulls.ask(self.BATCH)

    async def _on_delivery(self, pulls: PullRequests, msg: Msg) -> None:
        taken = pulls.take(msg)
        if taken == PullRequests.GONE:
            # Create the consumer again from where we are (once, however many say so).
            if self._task is None or self._task.done():
                self._on_reconnect()
            return
        if taken == PullRequests.DELIVERY:
            try:
                await self.handler(msg)
            except Exception:
                log.exception("%s: handling the message on %s failed", self.name, msg.subject)
            with contextlib.suppress(Exception):
                self.last_seq = max(self.last_seq, msg.metadata.sequence.stream)
        if pulls.owed <= self.BATCH // 2:
            await self._pull(pulls)

    async def start(self) -> None:
        async with self._lock:
            await retry_not_ready(f"the subscription to {self.name}", self._subscribe)
        self._remove_hook = on_reconnect(self.nc, self._on_reconnect)

    async def consumer_info(self) -> js_api.ConsumerInfo:
        """The replay's consumer as the server sees it (how many messages it still has to deliver)."""
        assert self.stream is not None and self.consumer is not None, "start() first"
        info: js_api.ConsumerInfo = await self.js.consumer_info(self.stream, self.consumer)
        return info

    def _on_reconnect(self) -> None:
        if not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._resubscribe())

    async def _unsubscribe(self) -> None:
        old, self.sub = self.sub, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.unsubscribe(), timeout=2.0)

    async def _resubscribe(self) -> None:
        async with self._lock:
            if self._closed:
                return
            await self._unsubscribe()
            try:
                await retry_not_ready(f"the subscription to {self.name}", self._subscribe)
            except Exception as exc:
                log.error("could not resubscribe to %s after a reconnect: %s", self.name, exc)
                return
        log.info("resubscribed to %s from stream sequence %d", self.name, self.last_seq + 1)

    async def close(self) -> None:
        self._closed = True
        if self._remove_hook is not None:
            self._remove_hook()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._unsubscribe()


# ---------------------------------------------------------------------------------------------------------
# Graceful shutdown
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def shutdown_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT (first signal); the service then drains and exits 0."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix or not main thread
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_async(main: Callable[[asyncio.Event], Awaitable[int]]) -> int:
    """Run a service's ``main(stop)`` with signal handling; returns its exit code."""

    async def runner() -> int:
        stop = asyncio.Event()
        with shutdown_on_signals(stop):
            return await main(stop)

    return asyncio.run(runner())


async def drain(nc: NATS) -> None:
    """Flush pending publishes and close; never raises during shutdown."""
    with contextlib.suppress(Exception):
        if nc.is_connected:
            await nc.drain()
    with contextlib.suppress(Exception):
        await nc.close()


async def announce(nc: NATS, service: str) -> Any:
    """Make this service discoverable (``$SRV.PING``/``$SRV.INFO``) as ``transcode-energy-<service>``, a
    nats.micro service without endpoints; ``transcode-energy status`` lists what answers."""
    import nats.micro

    return await nats.micro.add_service(
        nc,
        name=f"{subjects.MICRO_SERVICE_PREFIX}{service}",
        version=version(),
        description=f"transcode-energy {service}",
        metadata={"service": service},
    )
