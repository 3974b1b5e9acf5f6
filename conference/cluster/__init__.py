"""The cluster: node records, room placement and room state in Redis.

Nothing here runs on a single node: without ``redis.url`` the node uses the
in-memory registry (conference/registry.py) and the in-memory room state
(conference/cluster/state.py). Only the modules that talk to Redis import
``redis``.
"""
