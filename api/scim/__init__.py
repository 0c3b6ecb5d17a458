"""SCIM 2.0 at /scim/v2: a second door onto the same users, agents and ledger. Routes parse
the protocol and answer in its media type and error schema; identity/scim does the rest."""
