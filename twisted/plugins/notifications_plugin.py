from twisted.application.service import ServiceMaker

notifications = ServiceMaker(
    "notifications",
    "notifications.tap",
    "Notifications center: webhooks in, notifications out on RabbitMQ",
    "notifications",
)
