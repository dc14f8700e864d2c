"""The dual encoder: towers, tf.Transform text preprocessing, training, TFLite export and metadata, bundled model."""
