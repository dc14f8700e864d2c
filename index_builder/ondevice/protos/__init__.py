"""Generated protos of the on-device index config (regen.sh rebuilds them)."""
