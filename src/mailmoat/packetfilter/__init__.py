"""The packet-filter layer (`[packetfilter]`): bans and connection floods dropped in the
kernel by a table of mailmoat's own (nftables), before they cost mailmoat a socket.

`filter` keeps the kernel's sets in step with the bans, `watch` hears of the bans where they
are written (the store), `nftables` speaks nftables' JSON."""
