"""biobert: biomedical BERT pre-training and fine-tuning on DeepSpeed."""

from setuptools import find_packages, setup

setup(
    name="biobert",
    version="0.1.0",
    description="BioBERT reproduced and extended: PubMed/PMC data prep, DeepSpeed pre-training, "
    "biomedical NER/RE/QA fine-tuning",
    python_requires=">=3.10",
    packages=find_packages(
        include=["biobert", "biobert.*", "data_prep", "data_prep.*", "pretrain", "pretrain.*", "finetune", "finetune.*"]
    ),
    install_requires=[
        "torch>=2.1",
        "deepspeed>=0.14",
        "transformers>=4.40",
        "tokenizers>=0.15",
        "pyarrow>=14",
        "lxml>=4.9",
        "numpy>=1.24",
        "tensorboard>=2.14",
        "tqdm>=4.60",
    ],
    extras_require={"dev": ["pytest>=7", "ruff>=0.4"]},
    entry_points={
        "console_scripts": [
            "biobert-data-prep=data_prep.cli:main",
        ]
    },
)
