"""Hardware drivers. Each is registered in the entry-point group
`city_edge_gateway.drivers`; see drivers/base.py for the seam."""
