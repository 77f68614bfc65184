"""Ticket gates: automatic fare collection (AFC) records and the occupancy they imply.

`records` holds the passage and count schemas and their strict, vectorised parsers; `occupancy`
keeps the per-station gate windows (entries, exits, occupancy per zone). It may import the
core's root (`batches`, `isotime`, `site`), never another signal wing.
"""
