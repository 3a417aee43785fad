"""Switching: plan, lock, transaction, recover and hosts, for one host or many."""
