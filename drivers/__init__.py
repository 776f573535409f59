"""Hardware drivers. Each is registered in the entry-point group
`city_edge_gateway.drivers`; see gateway/sdk/driver.py for the seam."""
