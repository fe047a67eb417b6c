"""bootkit-statedb: the worker's revoked ids and clock, kept across restarts."""
