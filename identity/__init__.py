"""The idmirror domain: identities, the job ledger and how jobs are applied."""
