"""Opt-in end-to-end tests against a real llama.cpp server (see README "Real llama.cpp check")."""
