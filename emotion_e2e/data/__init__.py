"""Corpora → TFRecords → tf.data: schema, media, faces, labels, converters, reader."""
