"""The DNS server's pure logic: the zone, its deltas, the wire format, guards and counters."""
