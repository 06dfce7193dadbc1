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


def _time(text: str):
    from datetime import UTC, datetime

    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _who() -> str:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def cmd_threshold(args: argparse.Namespace) -> int:
    from lineguard.tool_settings import ToolSettings
    from shared.thresholds import (
        DEFAULT_LINE,
        ThresholdKeys,
        connect,
        list_thresholds,
        set_threshold,
        threshold_history,
        unset_threshold,
    )

    settings = ToolSettings.load(args.config)
    client, keys = connect(settings.redis), ThresholdKeys(settings.redis.prefix)
    line = DEFAULT_LINE if getattr(args, "line", None) == "default" else getattr(args, "line", None)
    shown = {DEFAULT_LINE: "default"}
    if args.action == "get":
        values = list_thresholds(client, keys)
        if line in values:
            print(f"{args.line} {values[line]} ({'line' if line != DEFAULT_LINE else 'default'} key)")
        elif DEFAULT_LINE in values:
            print(f"{args.line} {values[DEFAULT_LINE]} (default key)")
        else:
            print(f"{args.line} not set: the model's default (0.5) applies")
    elif args.action == "set":
        previous = set_threshold(client, keys, line, args.value, who=args.who or _who(),
                                 reason=args.reason or "")
        print(f"{args.line}: {previous if previous is not None else 'unset'} -> {float(args.value)}")
    elif args.action == "unset":
        removed = unset_threshold(client, keys, line, who=args.who or _who(), reason=args.reason or "")
        print(f"{args.line}: {'removed' if removed else 'was not set'}")
    elif args.action == "list":
        for name, value in list_thresholds(client, keys).items():
            print(f"{shown.get(name, name)} {value}")
    elif args.action == "history":
        for row in threshold_history(client, keys, line, args.count):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(row.get("time", 0))))
            print(f"{when} {shown.get(row['line'], row['line'])} {row.get('old') or 'unset'} -> "
                  f"{row.get('new') or 'unset'} by {row.get('who')}"
                  + (f" ({row['reason']})" if row.get("reason") else ""))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from producer.recording import record_mvtec, record_source, record_topic
    from producer.sources import open_source

    settings = _tool_settings(args)
    if args.mvtec:
        count = record_mvtec(args.mvtec, args.out, args.line or "line-1", args.camera or "cam-1",
                             limit=args.limit)
        skipped = 0
    elif args.source:
        frames = open_source(args.source, idle_timeout_s=args.idle_timeout, limit=args.limit)
        count = record_source(frames, args.out, args.source, args.line or "line-1",
                              args.camera or "cam-1", limit=args.limit)
        skipped = 0
    else:
        from shared.kafka import topic_reader

        # from a minute before --since: capture and broker times differ a little
        since_ms = int(args.since.timestamp() * 1000) - 60_000 if args.since else None
        consumer = topic_reader(settings.kafka, settings.topics.frames.name, since_ms)
        try:
            count, skipped = record_topic(consumer, args.out, f"topic:{settings.topics.frames.name}",
                                          line_id=args.line, since=args.since, until=args.until,
                                          count=args.limit, idle_timeout_s=args.idle_timeout or 5.0)
        finally:
            consumer.close()
    print(json.dumps({"recording": str(args.out), "frames": count, "skipped_invalid": skipped}))
    return 0


def _tool_settings(args: argparse.Namespace):
    from lineguard.tool_settings import ToolSettings

    return ToolSettings.load(args.config)


def cmd_replay(args: argparse.Namespace) -> int:
    from producer.publisher import FramePublisher
    from producer.recording import read_recording, replay_frames
    from producer.settings import ProducerSettings
    from shared.kafka import make_producer

    settings = ProducerSettings.load(args.config)
    entries = read_recording(args.recording)
    speed = None if args.as_fast_as_possible else args.speed
    producer = make_producer(settings.kafka)
    try:
        summary = FramePublisher(settings, producer).publish(
            replay_frames(args.recording, entries, speed, line_id=args.line,
                          fresh_ids=args.fresh_ids, restamp=args.restamp))
    finally:
        producer.close(timeout=10)
    print(json.dumps(summary.as_dict() | {"recording": str(args.recording)}))
    return 0 if summary.failed == 0 else 1


def cmd_validate(args: argparse.Namespace) -> int:
    from lineguard.validation import validate_offline, validate_online

    settings = _tool_settings(args)
    out = args.out or Path(args.recording) / ("validation-offline" if args.offline else "validation")
    if args.offline:
        report = validate_offline(args.recording, args.model or settings.model, out,
                                  threshold=args.threshold, target_recall=args.target_recall,
                                  device=args.device)
    else:
        report = validate_online(args.recording, settings, out, line_id=args.line,
                                 target_recall=args.target_recall, speed=args.speed,
                                 timeout_s=args.timeout)
    frames, metrics = report["frames"], report["metrics"]
    print(json.dumps({"report": str(out / "report.md"), **frames,
                      **{k: metrics.get(k) for k in ("image_auroc", "precision", "recall", "f1",
                                                     "best_f1_threshold", "target_recall_threshold")}},
                     default=str))
    return 0 if frames["lost"] == 0 else 4


def cmd_bench(args: argparse.Namespace) -> int:
    from lineguard.bench import PARTS, run_bench

    parts = args.parts.split(",") if args.parts else PARTS
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench parts {sorted(unknown)}; choose from {PARTS}")
    run_bench(args.out, parts, quick=args.quick, device=args.device)
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
    produce.add_argument("source", help="image folder or glob, recording, video file, rtsp://..., camera:N, "
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

    threshold = commands.add_parser("threshold", help="per-line thresholds in Redis")
    actions = threshold.add_subparsers(dest="action", required=True)
    for name, text in [("get", "the threshold a line uses"), ("set", "set a line's threshold"),
                       ("unset", "remove a line's threshold"), ("list", "every threshold key"),
                       ("history", "audited changes, oldest first")]:
        action = actions.add_parser(name, help=text)
        action.add_argument("--config", type=Path, default=None, help=config_help)
        if name in ("get", "set", "unset"):
            action.add_argument("line", help="line id, or `default` for the default key")
        if name == "history":
            action.add_argument("line", nargs="?", default=None)
            action.add_argument("--count", type=int, default=20)
        if name == "set":
            action.add_argument("value", help="normalised score units, 0 < value < 1")
        if name in ("set", "unset"):
            action.add_argument("--reason", default=None)
            action.add_argument("--who", default=None, help="default: user@host")
    threshold.set_defaults(func=cmd_threshold)

    record = commands.add_parser("record", help="record frames into a recording folder")
    record.add_argument("out", type=Path, help="recording folder to create")
    source = record.add_mutually_exclusive_group()
    source.add_argument("--source", default=None, help="a producer source (see produce)")
    source.add_argument("--mvtec", type=Path, default=None,
                        help="an MVTec AD layout: test/ images with labels and masks")
    record.add_argument("--config", type=Path, default=None, help=config_help)
    record.add_argument("--line", default=None, help="topic: only this line; others: the line id")
    record.add_argument("--camera", default=None)
    record.add_argument("--since", type=_time, default=None, help="topic: capture time from (ISO)")
    record.add_argument("--until", type=_time, default=None, help="topic: capture time up to (ISO)")
    record.add_argument("--limit", type=int, default=None, help="at most N frames")
    record.add_argument("--idle-timeout", type=float, default=None,
                        help="topic/ZeroMQ: stop after this many seconds without frames (topic: 5)")
    record.set_defaults(func=cmd_record)

    replay = commands.add_parser("replay", help="publish a recording to the frames topic")
    replay.add_argument("recording", type=Path)
    replay.add_argument("--config", type=Path, default=None, help=config_help)
    replay.add_argument("--speed", type=float, default=1.0, help="1: the original pace; 2: twice as fast")
    replay.add_argument("--as-fast-as-possible", action="store_true")
    replay.add_argument("--line", default=None, help="publish onto this line id instead")
    replay.add_argument("--fresh-ids", default=None, metavar="PREFIX",
                        help="prefix frame ids (so a pipeline does not treat them as redeliveries)")
    replay.add_argument("--restamp", action="store_true", help="capture time = time of sending")
    replay.set_defaults(func=cmd_replay)

    validate = commands.add_parser("validate", help="validate a model and threshold on a recording")
    validate.add_argument("recording", type=Path)
    validate.add_argument("--config", type=Path, default=None, help=config_help)
    validate.add_argument("--out", type=Path, default=None)
    validate.add_argument("--offline", action="store_true", help="run the model here, without Kafka")
    validate.add_argument("--model", type=Path, default=None, help="offline: model directory")
    validate.add_argument("--threshold", type=float, default=None,
                          help="offline: threshold (default: the model's, 0.5)")
    validate.add_argument("--device", default="cpu")
    validate.add_argument("--line", default=None, help="replay onto this line id")
    validate.add_argument("--speed", type=float, default=None,
                          help="replay pace (default: as fast as possible)")
    validate.add_argument("--target-recall", type=float, default=0.95)
    validate.add_argument("--timeout", type=float, default=120.0,
                          help="give up waiting after this many seconds without a new inspection")
    validate.set_defaults(func=cmd_validate)

    bench = commands.add_parser("bench", help="throughput, latency and cost, side by side")
    bench.add_argument("--out", type=Path, default=Path("runs/bench"))
    bench.add_argument("--parts", default=None,
                       help="comma-separated: model,compare,pipeline,sizes,workers (default: all)")
    bench.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    bench.add_argument("--device", default="cpu")
    bench.set_defaults(func=cmd_bench)

    broker = commands.add_parser("broker", help="run the embedded Kafka-compatible broker (local use)")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(func=cmd_broker)


def run_errors():
    """Errors the service commands report as a message and exit code instead of a traceback."""
    from lineguard.broker import BrokerStartError
    from producer.publisher import BrokerGoneError
    from shared.kafka import BrokerUnavailableError, DeliveryError

    return {BrokerUnavailableError: 3, BrokerGoneError: 3, BrokerStartError: 3, DeliveryError: 1}


