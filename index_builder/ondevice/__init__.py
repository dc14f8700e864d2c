"""The on-device ScaNN index (index.ldb): LevelDB table, config protos, quantizer, calibration, reference search."""
