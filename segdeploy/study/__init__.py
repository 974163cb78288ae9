"""The study: statistics over a grid of bench rows (``stats``, ``aggregate``), the rows' adapter (``rows``) and the
published accuracy of the reference study (``published``)."""
