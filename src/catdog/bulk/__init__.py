"""Bulk classification of a photo collection into one table (``catdog classify``, docs/bulk.md).

``sources`` lists the files, ``replica`` is the one code path from a file to
its row that every engine runs, ``table`` writes the table and its committed
parts, ``local`` and ``ray_engine`` are the two engines and ``job`` ties them
together, resumably; ``classify`` is its command line.
"""
