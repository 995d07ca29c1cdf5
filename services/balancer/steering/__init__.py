"""Connection-ID steering: every QUIC packet reaches the balancer process that owns its connection.

Processes that share a UDP port (workers, replicas on one host) each own a *slot*. The
connection IDs a process issues carry its slot (`cid`), so any process that receives a packet
for a connection it does not hold can tell whose it is and forward the datagram to that owner
over a local socket (`peers`); `decide` is the pure rule that picks local, forward, broadcast
or drop for each datagram (`plan`).
"""
