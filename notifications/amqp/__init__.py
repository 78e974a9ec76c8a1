"""Talking to RabbitMQ: what txamqp needs from us to speak AMQP 0-9-1."""
