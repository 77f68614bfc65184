"""110 emergency calls: records, categories, counts and bursts.

`records` parses call records, scrubs them (with the core's `crowdwatch.privacy`) and places
them in zones; `categories` maps call types to the groups that count; `counts` keeps
rolling call counts and Poisson burst scores. It may import the core's root, never another
signal wing.
"""
