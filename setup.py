from setuptools import setup

setup(
    name="tfnas",
    version="0.1.0",
    description="Neural architecture search for edge devices with Keras 3, to quantized TFLite.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=["tfnas", "tfnas.compaction", "tfnas.data", "tfnas.methods", "tfnas.spaces",
              "tfnas.tuners", "tfnas.layers", "tfnas.deploy"],
    package_dir={"tfnas": "tfnas", "tfnas.layers": "layers", "tfnas.deploy": "deploy"},
    package_data={"tfnas.data": ["*.npz", "*.csv"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "keras-tuner>=1.4.7,<1.5",
        "scikit-learn>=1.5,<2",  # keras-tuner's BayesianOptimization (search.tuner "bayesian")
        "tensorflow-datasets>=4.9.9,<5",
        "importlib_resources>=6",  # tfds downloads need it but do not declare it
        # tensorflow-model-optimization 0.8 pins absl-py~=1.2.
        "absl-py>=1.2,<2",
        "ai-edge-litert>=2.0,<3",
        "jsonschema>=4.18,<5",
        "matplotlib>=3.8,<4",
        "tensorboard>=2.20,<2.22",
    ],
    extras_require={
        "qat": ["tensorflow-model-optimization>=0.8.1,<0.9", "tf-keras>=2.21,<2.22"],
        "test": ["pytest>=8", "pytest-xdist>=3.5,<4", "tensorflow-model-optimization>=0.8.1,<0.9",
                 "tf-keras>=2.21,<2.22"],
        "docs": ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=0.26"],
    },
    entry_points={"console_scripts": ["tfnas=tfnas.cli:run_main"]},
)
