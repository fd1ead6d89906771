"""The functional core: pure functions over frozen data, with ``now`` passed in.

``models`` (the data), ``diff`` (snapshot vs memory), ``rules`` (which conditions hold),
``lifecycle`` (pending/firing/resolved, what to send), ``inhibit`` (notify filters),
``summary`` (the words), ``cycle`` (all of it for one poll). Nothing here does I/O,
logs or reads a clock; ``make lint`` enforces it with an import contract.
"""
