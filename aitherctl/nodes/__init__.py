"""Rented GPU nodes: what a profile's `nodes:` asks for, the marketplaces that rent them (behind
`provider.Provider`), the record of every instance this machine created, and the operations
that list, destroy and recover them."""
