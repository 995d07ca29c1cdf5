"""The l4 mode's glue: nftables, conntrack and the connection-ID learning program in the host's kernel."""
