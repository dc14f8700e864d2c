"""Image bytes to model-ready RGB arrays: format sniffing, guarded decoding, pixel modes, reject reasons (no Beam)."""
