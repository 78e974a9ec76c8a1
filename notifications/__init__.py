"""The notifications center: webhooks in, standardized notifications out on RabbitMQ."""

__version__ = "0.1.0"
