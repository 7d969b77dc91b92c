"""The parts the DNS server (:mod:`daprdockr.dnsserver`) is made of, and its worker processes' pool.

* ``listeners.py``   its sockets: UDP and TCP on one port, SO_REUSEPORT, spread by BPF
* ``udp.py``         the datagram protocol: rate limit, the outside clients' answer bound
* ``tcp.py``         TCP connections, bounded in number, idle time, lifetime and writes
* ``clients.py``     who is asking: inside ``allow`` or outside with a rate-limit key
* ``cache.py``       pre-encoded answers served in turn, ended by their owner's change
* ``forwarding.py``  names outside the zone, to the upstream resolvers, capped
* ``workers.py``     the pool of DNS worker processes (:mod:`daprdockr.dnsworker`) on the same address
"""
