"""Selective forwarding unit on aiortc: forwards encoded media without transcoding.

``sfu`` imports nothing else of Parley's; it sees ids and ``app_data`` only.
"""
