"""110 emergency calls: records, categories, privacy scrubbing, counts and bursts.

`records` parses call records and places them in zones; `categories` maps call types to the
groups that count; `privacy` scrubs phone and ID numbers and keys caller ids; `counts` keeps
rolling call counts and Poisson burst scores. It may import the core's root, never another
signal wing.
"""
