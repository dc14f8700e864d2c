"""The index build, step by step: inputs -> server index -> on-device index -> evaluation -> records."""
