"""Tests of SCIM in the domain."""
