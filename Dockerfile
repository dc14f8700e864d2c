# Custom worker container for Dataflow (--sdk_container_image=...).
# The base image's Beam version and Python must match setup.py's pins
# (tests/test_packaging.py checks it).
FROM apache/beam_python3.11_sdk:2.77.0

WORKDIR /opt/image_search_indexer
COPY setup.py README.md ./
COPY beam_jobs ./beam_jobs
COPY nightly ./nightly
COPY sample_catalog ./sample_catalog
COPY index_builder ./index_builder
COPY transforms ./transforms
COPY encoders ./encoders
COPY images ./images
RUN pip install --no-cache-dir .

# Dataflow launches the Beam SDK harness from the base image's entrypoint.
ENTRYPOINT ["/opt/apache/beam/boot"]
