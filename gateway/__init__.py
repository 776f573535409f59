"""City Edge Gateway: field sensors -> durable SQLite buffer -> MQTT / NGSI-LD."""

__version__ = "0.1.0"
