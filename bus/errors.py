"""Exceptions that the bus's clients raise, so callers never need to catch ``zmq`` types."""

from __future__ import annotations


class BusError(Exception):
    """A bus operation failed (socket closed, supervisor gone, send timed out)."""


class ControlTimeout(BusError):
    """No reply to a control request within its timeout; the client's socket was recreated."""


class CommandRefused(BusError):
    """The supervisor answered, but refused the command; the message says why."""
