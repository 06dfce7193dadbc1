"""Prometheus metrics of a detector worker (one registry per worker instance)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class DetectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter("lineguard_frames_consumed", "Frames read from the frames topic",
                                ["line"], registry=r)
        self.inspected = Counter("lineguard_frames_inspected", "Frames inspected, by verdict",
                                 ["line", "verdict"], registry=r)
        self.dead_lettered = Counter("lineguard_frames_dead_lettered",
                                     "Frames sent to the dead-letter topic", ["reason"], registry=r)
        self.batch_size = Histogram("lineguard_batch_size", "Frames per inference batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.decode_seconds = Histogram("lineguard_decode_seconds", "Decoding and resizing one frame",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("lineguard_inference_seconds", "Model time of one batch",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        self.capture_to_inspection = Histogram(
            "lineguard_capture_to_inspection_seconds",
            "From a frame's capture time to its inspection being published", ["line"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.threshold = Gauge("lineguard_threshold", "Threshold in use (normalised units)",
                               ["line", "source"], registry=r)
        self.threshold_cache_age = Gauge("lineguard_threshold_cache_age_seconds",
                                         "Seconds since thresholds were last read from Redis",
                                         registry=r)
        self.consumer_lag = Gauge("lineguard_consumer_lag", "Records behind the high-water mark",
                                  ["topic", "partition"], registry=r)
        self.commits = Counter("lineguard_offset_commits", "Offset commits, by outcome",
                               ["outcome"], registry=r)
