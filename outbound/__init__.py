"""Republish: Segment mapping, batch packing, retry policy and the publisher job."""
