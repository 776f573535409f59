"""The driver SDK: everything a driver or a plugin imports, and nothing else.

It imports nothing of the rest of the gateway, so a driver never depends on the
core and the core reaches drivers only through the entry-point registry:

    from gateway.sdk import Driver, SensorOptions, DeviceError, Reading, Value, Duration
"""

from gateway.sdk.driver import DeviceError, DistanceOptions, Driver, SensorOptions
from gateway.sdk.fields import (Duration, Location, Name, ReadableFile, SecretFile, Strict, key_error,
                                parse_i2c_address)
from gateway.sdk.pseudonym import pseudonym
from gateway.sdk.reading import Reading, Value, format_time

__all__ = ["DeviceError", "DistanceOptions", "Driver", "SensorOptions", "Duration", "Location", "Name",
           "ReadableFile", "SecretFile", "Strict", "key_error", "parse_i2c_address", "pseudonym", "Reading", "Value",
           "format_time"]
