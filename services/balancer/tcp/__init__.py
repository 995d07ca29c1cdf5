"""The TCP listener for browsers: TLS with HTTP/2 and HTTP/1.1 on the UDP listener's port number.

A browser knows nothing of an origin's HTTP/3 until an answer over TCP says `Alt-Svc: h3=...`;
this listener gives it those answers, proxied through the same router, exchanges and intake as
HTTP/3, so the first page load works and later ones move to QUIC.
"""
