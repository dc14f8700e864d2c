"""The dual encoder: towers, tf.Transform text preprocessing, training, TFLite export and metadata, bundled model."""

from encoders import quiet_native_logs

quiet_native_logs.install()
