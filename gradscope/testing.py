"""Test helpers: fail a test when gradients vanish or explode through time (the public face of
``gradscope.gate.assertions``)."""

from gradscope.gate.assertions import assert_gradients_healthy, describe_findings, where

__all__ = ["assert_gradients_healthy", "describe_findings", "where"]
