# coding=utf-8
"""bbf-dopamine: the BBF agent as a gin-configurable plugin for Dopamine."""

__version__ = '0.1.0'
