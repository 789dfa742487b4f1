"""Kafka adapters: topic registry, admin, producers, consumers and the faust app factory."""
