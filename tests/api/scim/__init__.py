"""Tests of the SCIM edge."""
