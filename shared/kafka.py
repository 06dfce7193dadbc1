"""Kafka helpers: clients built from settings, topic creation, waiting for acknowledgements,
consumer lag from the high-water mark."""

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from kafka import (
    ConsumerRebalanceListener,
    KafkaAdminClient,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from shared.logging import get_logger
from shared.schemas import DeadLetter, dead_letter_headers, utc_now
from shared.settings import KafkaSettings, TopicSpec

log = get_logger("lineguard.kafka")


class BrokerUnavailableError(RuntimeError):
    """The cluster could not be reached within the bootstrap timeout."""


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options common to producers, consumers and the admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "bootstrap_timeout_ms": settings.bootstrap_timeout_ms,
    }
    if settings.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=settings.sasl_mechanism or "PLAIN",
                       sasl_plain_username=settings.sasl_username,
                       sasl_plain_password=(settings.sasl_password.get_secret_value()
                                            if settings.sasl_password else None))
    if settings.security_protocol.endswith("SSL"):
        options.update(ssl_cafile=_path(settings.ssl_cafile), ssl_certfile=_path(settings.ssl_certfile),
                       ssl_keyfile=_path(settings.ssl_keyfile),
                       ssl_password=(settings.ssl_password.get_secret_value()
                                     if settings.ssl_password else None),
                       ssl_check_hostname=settings.ssl_check_hostname)
    return options


def _unreachable(settings: KafkaSettings, error: Exception) -> BrokerUnavailableError:
    return BrokerUnavailableError(f"cannot reach Kafka at {settings.bootstrap_servers}: {error}")


def _path(value) -> str | None:
    return str(value) if value is not None else None


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """An idempotent producer that waits for all in-sync replicas (acks=all)."""
    options = client_options(settings) | {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_request_size": settings.max_message_bytes,
        "compression_type": settings.compression_type,
        "retries": 2**31 - 1,
        "delivery_timeout_ms": max(30_000, settings.request_timeout_ms + settings.linger_ms),
    } | overrides
    try:
        return KafkaProducer(**options)
    except KafkaError as error:
        raise _unreachable(settings, error) from error


def make_consumer(settings: KafkaSettings, group_id: str, **overrides: Any) -> KafkaConsumer:
    """A group member with manual commits, starting from the earliest offset of a new group."""
    options = client_options(settings) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "fetch_max_bytes": max(52_428_800, settings.max_message_bytes),
        "max_partition_fetch_bytes": settings.max_message_bytes,
    } | overrides
    try:
        return KafkaConsumer(**options)
    except KafkaError as error:
        raise _unreachable(settings, error) from error


def create_topics(settings: KafkaSettings, specs: Iterable[TopicSpec]) -> dict[str, str]:
    """Create the topics that do not exist yet; returns name -> 'created' | 'exists'."""
    try:
        admin = KafkaAdminClient(**client_options(settings))
    except KafkaError as error:
        raise _unreachable(settings, error) from error
    outcome: dict[str, str] = {}
    try:
        for spec in specs:
            topic = NewTopic(spec.name, spec.partitions, spec.replication_factor, topic_configs={
                "retention.ms": str(spec.retention_ms),
                "max.message.bytes": str(settings.max_message_bytes)})
            try:
                admin.create_topics([topic])
                outcome[spec.name] = "created"
            except TopicAlreadyExistsError:
                outcome[spec.name] = "exists"
    finally:
        admin.close()
    return outcome


class DeliveryError(RuntimeError):
    """The broker did not acknowledge a record; the offsets it depends on stay uncommitted."""


def wait_for_acks(producer: KafkaProducer, futures: Sequence[Any], timeout_s: float) -> None:
    """Flush and wait until every send is acknowledged, or raise DeliveryError."""
    if not futures:
        return
    producer.flush(timeout=timeout_s)
    for future in futures:
        try:
            future.get(timeout=timeout_s)
        except Exception as error:
            raise DeliveryError(f"a record was not acknowledged by the broker: {error}") from error


def consumer_lag(consumer: KafkaConsumer) -> dict[TopicPartition, int]:
    """Records behind the high-water mark per assigned partition (from fetch responses, which
    stay right where some brokers' end-offset answers do not)."""
    lag: dict[TopicPartition, int] = {}
    for partition in consumer.assignment():
        highwater = consumer.highwater(partition)
        if highwater is None:
            continue
        try:
            position = consumer.position(partition, timeout_ms=0)
        except KafkaError:  # position not known yet (just assigned): no figure this time
            continue
        if position is not None:
            lag[partition] = max(0, highwater - position)
    return lag


class BrokerProbe:
    """Checks in a background thread that the cluster answers a metadata request; the result
    feeds readiness without ever blocking a consume loop."""

    def __init__(self, settings: KafkaSettings, on_result, interval_s: float = 5.0) -> None:
        self.settings = settings
        self.on_result = on_result
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)

    def start(self) -> "BrokerProbe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        admin = None
        while not self._stop.is_set():
            try:
                if admin is None:
                    admin = KafkaAdminClient(**client_options(self.settings))
                admin.list_topics()
                self.on_result(True, "")
            except Exception as error:
                self.on_result(False, f"Kafka not reachable: {error}")
                if admin is not None:
                    admin.close()
                admin = None
            self._stop.wait(self.interval_s)
        if admin is not None:
            admin.close()


def commit_processed(consumer: KafkaConsumer, records: Iterable[Any]) -> bool:
    """Commit, per partition, the offset after the last of `records` (all processed and their
    outputs acknowledged). False when the group has moved on: the records come again to their
    new owner (duplicates, never losses)."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        partition = TopicPartition(record.topic, record.partition)
        offsets[partition] = max(offsets.get(partition, 0), record.offset + 1)
    try:
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        return True
    except KafkaError as error:  # CommitFailedError after a rebalance, or the broker gone
        log.warning("offset commit failed; records will be redelivered", error=str(error))
        return False


def send_dead_letter(producer: KafkaProducer, topic: str, record: Any, reason: str, detail: str,
                     worker_id: str):
    """The record's key, value and headers, unchanged, plus dlq.* headers saying why."""
    letter = DeadLetter(reason=reason, detail=detail[:1000], source_topic=record.topic,
                        source_partition=record.partition, source_offset=record.offset,
                        worker_id=worker_id, time=utc_now())
    return producer.send(topic, key=record.key, value=record.value or b"",
                         headers=dead_letter_headers(record.headers, letter))


class AssignmentTracker(ConsumerRebalanceListener):
    """Keeps the partitions a consumer owns (readable from other threads) and tells the owner
    which ones a rebalance takes away, before they go."""

    def __init__(self, name: str, on_revoked=None) -> None:
        self.name = name
        self.assigned: frozenset[TopicPartition] = frozenset()
        self._on_revoked = on_revoked

    def on_partitions_revoked(self, revoked) -> None:
        revoked = frozenset(revoked)
        dropped = self._on_revoked(revoked) if self._on_revoked else None
        self.assigned = self.assigned - revoked
        log.info("partitions revoked", consumer=self.name, partitions=_names(revoked),
                 dropped_uncommitted=dropped)

    def on_partitions_assigned(self, assigned) -> None:
        self.assigned = self.assigned | frozenset(assigned)
        log.info("partitions assigned", consumer=self.name, partitions=_names(assigned))


def _names(partitions) -> list[str]:
    return sorted(f"{p.topic}-{p.partition}" for p in partitions)


def topic_reader(settings: KafkaSettings, topic: str, since_ms: int | None = None) -> KafkaConsumer:
    """A group-less consumer on every partition of `topic`, positioned at the first record at
    or after `since_ms` (where the broker finds one), else at the beginning."""
    consumer = KafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False,
                             max_partition_fetch_bytes=settings.max_message_bytes)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    if not partitions:
        consumer.close()
        raise ValueError(f"topic {topic} does not exist")
    consumer.assign(partitions)
    offsets = (consumer.offsets_for_times({tp: max(0, since_ms) for tp in partitions})
               if since_ms is not None else {})
    for tp in partitions:
        if offsets.get(tp) is not None:
            consumer.seek(tp, offsets[tp].offset)
        else:
            consumer.seek_to_beginning(tp)
    return consumer
