# coding=utf-8
"""Fixtures shared by the test modules."""

import gin
import pytest


@pytest.fixture
def clean_gin():
  """An empty gin configuration before and after the test.

  Gin's configuration is process-global: a test that parses gin files must
  neither see another test's bindings nor leave its own behind.
  """
  gin.clear_config()
  yield
  gin.clear_config()
