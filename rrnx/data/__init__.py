"""The temporal data layer: readers -> canonical table -> strict time split -> time steps."""
