"""Oversight for an institution's administrators and auditors: transactions, trail, statistics."""
