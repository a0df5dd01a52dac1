"""The application layer: every operation once (:mod:`.service`), the wire types of the
protocol (:mod:`.protocol`) with the one mapping from a core run to its wire form, and the one
human label of a run (:mod:`.present`). Frontends call it; it calls the core."""
