"""Code the lineguard services share: settings, message schemas, Kafka and Redis helpers, logging."""
