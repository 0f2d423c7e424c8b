"""Holdfast desktop agent: actions, screen capture, executor, agent loop and recorder."""
