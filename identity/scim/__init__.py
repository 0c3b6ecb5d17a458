"""SCIM 2.0 over the same users and ledger: the mapping between SCIM resources and idmirror's
identities, the writes a provider makes (each one a ledger job), and filters compiled to SQL.

The protocol's edge (routes, content types, the error schema) is api/scim/; nothing here knows
HTTP. docs/scim.md holds the mapping tables.
"""
