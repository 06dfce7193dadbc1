"""`lineguard` subcommands that run the streaming services and their tools."""

import argparse
import json
import time
from pathlib import Path

from shared.logging import get_logger

log = get_logger("lineguard")


def cmd_detector(args: argparse.Namespace) -> int:
    from detector.settings import DetectorSettings
    from detector.worker import DetectorWorker
    from shared.service import stop_on_signals

    worker = DetectorWorker(DetectorSettings.load(args.config))
    stop_on_signals(worker.stop)
    worker.run()
    return 0


def cmd_alerting(args: argparse.Namespace) -> int:
    from alerting.service import AlertingService
    from alerting.settings import AlertingSettings
    from shared.service import stop_on_signals

    service = AlertingService(AlertingSettings.load(args.config))
    stop_on_signals(service.stop)
    service.run()
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from producer.publisher import FramePublisher
    from producer.settings import ProducerSettings
    from producer.sources import open_source
    from shared.kafka import make_producer
    from shared.service import stop_on_signals

    overrides = {k: v for k, v in {"line_id": args.line, "camera_id": args.camera,
                                   "fps": args.fps}.items() if v is not None}
    settings = ProducerSettings.load(args.config, **overrides)
    frames = open_source(args.source, loop=args.loop, label=args.label,
                         jpeg_quality=settings.jpeg_quality, max_bytes=settings.max_frame_bytes,
                         idle_timeout_s=args.idle_timeout, limit=args.limit)
    producer = make_producer(settings.kafka)
    stopping = []
    stop_on_signals(lambda: stopping.append(True))
    try:
        summary = FramePublisher(settings, producer).publish(frames, limit=args.limit,
                                                             stop=lambda: bool(stopping))
    finally:
        producer.close(timeout=10)
    result = summary.as_dict() | {"topic": settings.topics.frames.name, "line_id": settings.line_id}
    print(json.dumps(result))
    log.info("producer finished", **result)
    return 0 if summary.failed == 0 else 1


def cmd_topics(args: argparse.Namespace) -> int:
    from shared.kafka import create_topics
    from shared.settings import ServiceSettings

    settings = ServiceSettings.load(args.config)
    outcome = create_topics(settings.kafka, settings.topics.all())
    for spec in settings.topics.all():
        print(f"{spec.name}: {outcome[spec.name]} ({spec.partitions} partitions, "
              f"retention {spec.retention_ms} ms)")
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from lineguard.broker import EmbeddedBroker

    with EmbeddedBroker(port=args.port) as broker:
        print(f"embedded broker on {broker.bootstrap} (memory storage); Ctrl-C stops it",
              flush=True)
        try:
            while broker.process.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def add_service_commands(commands) -> None:
    config_help = "YAML settings file (environment variables LINEGUARD_* override it)"

    detector = commands.add_parser("detector", help="run a detector worker (consumer group member)")
    detector.add_argument("--config", type=Path, default=None, help=config_help)
    detector.set_defaults(func=cmd_detector)

    alerting = commands.add_parser("alerting", help="run the alerting service")
    alerting.add_argument("--config", type=Path, default=None, help=config_help)
    alerting.set_defaults(func=cmd_alerting)

    produce = commands.add_parser("produce", help="publish frames from a source to Kafka")
    produce.add_argument("source", help="image folder or glob, video file, rtsp://..., camera:N, "
                                        "zmq:tcp://*:5555 (bind) or zmq+connect:tcp://host:5555")
    produce.add_argument("--config", type=Path, default=None, help=config_help)
    produce.add_argument("--line", default=None, help="line id (settings: line_id)")
    produce.add_argument("--camera", default=None, help="camera id (settings: camera_id)")
    produce.add_argument("--fps", type=float, default=None, help="frames per second; 0: as fast as possible")
    produce.add_argument("--limit", type=int, default=None, help="stop after N frames")
    produce.add_argument("--loop", action="store_true", help="repeat a folder's images")
    produce.add_argument("--label", choices=["good", "defective"], default=None,
                         help="label header for every frame (for validation)")
    produce.add_argument("--idle-timeout", type=float, default=None,
                         help="ZeroMQ: finish after this many seconds without a message")
    produce.set_defaults(func=cmd_produce)

    topics = commands.add_parser("topics", help="create the topics named in the settings")
    topics.add_argument("action", choices=["create"])
    topics.add_argument("--config", type=Path, default=None, help=config_help)
    topics.set_defaults(func=cmd_topics)

    broker = commands.add_parser("broker", help="run the embedded Kafka-compatible broker (local use)")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(func=cmd_broker)


def run_errors():
    """Errors the service commands report as a message and exit code instead of a traceback."""
    from lineguard.broker import BrokerStartError
    from producer.publisher import BrokerGoneError
    from shared.kafka import BrokerUnavailableError, DeliveryError

    return {BrokerUnavailableError: 3, BrokerGoneError: 3, BrokerStartError: 3, DeliveryError: 1}


