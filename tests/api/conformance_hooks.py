"""Schemathesis hooks for the conformance run: NDJSON backfill bodies are sent as the text
the document says they are."""

import schemathesis

schemathesis.serializer.alias("application/x-ndjson", "text/plain")
