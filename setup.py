"""The image-search indexer package.

Also what Dataflow's ``--setup_file`` ships to workers, so it must install the
whole runtime stack. The pins are exact: this combination is verified to
resolve and run together (docs/ARCHITECTURE.md, "Verified facts"), and tests/test_packaging.py keeps
the Dockerfile in agreement with them.
"""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
    "tensorflow==2.21.0",
    "apache-beam[gcp,aws]==2.77.0",
    "tensorflow-transform==1.21.0",
    "scann==1.4.2",
    "tensorflow-hub==0.16.1",
    "pyarrow==25.0.1",
    "google-cloud-storage==3.17.1",
    "pillow==12.3.0",
    "tqdm==4.70.1",
    "flatbuffers==25.12.19",
    "python-snappy==0.7.3",
    "google-crc32c==1.9.0",
    "protobuf==6.33.6",
    # LiteRT interpreter: runs imported TFLite-only image encoders in workers without importing TensorFlow.
    "ai-edge-litert==2.3.0",
]

EXTRAS_REQUIRE = {
    # Real servers on loopback for gs:// and s3:// tests.
    "test": [
        "pytest==9.2.0",
        "ruff==0.17.6",
        "gcp-storage-emulator==2026.7.19",
        "moto[server]==5.2.5",
    ],
    # Baselines that benchmarks put side by side with ScaNN; never needed at run time.
    "bench": [
        "faiss-cpu==1.15.1",
        "hnswlib==0.8.0",
        "psutil",
        "matplotlib",
    ],
}

setup(
    name="image-search-indexer",
    version="0.1.0",
    description="Batch image-catalog indexing: Beam embedding jobs, ScaNN indexes, TFLite searchers",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=["beam_jobs*", "nightly*", "sample_catalog*", "index_builder*", "transforms*", "encoders*", "images*"]
    ),
    package_data={
        "encoders": ["default_model/*", "default_model/**/*"],
        "index_builder": ["ondevice/protos/*.proto"],
    },
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
