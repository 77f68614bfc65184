"""The risk engine: warning levels, zone state, the alert lifecycle and notification.

`levels` turns a zone's inputs into one of the four colours with hysteresis; `engine` keeps each
station's zone state and raises, escalates and resolves alerts; `notify` delivers alert events to
the people on duty. It reads what the signal wings computed through plain values and imports none
of them, nor the sources or the warehouse.
"""
