from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / 'requirements.txt').read_text().splitlines()
    if line.strip() and not line.startswith('#')
]

setup(
    name='clip4str',
    version='0.1.0',
    description='A faithful, fast re-implementation of CLIP4STR (scene text recognition with CLIP)',
    long_description=(here / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.10',  # glob(root_dir=)
    packages=find_packages(include=['strhub', 'strhub.*']),
    include_package_data=True,
    package_data={'strhub': ['data/wordlist.txt', 'data/wordlist_el.txt', 'pretrained/*.ckpt', 'pretrained/README.md']},
    install_requires=requirements,
    extras_require={
        'test': ['pytest>=7', 'ruff==0.17.6', 'matplotlib>=3.5'],  # ruff pinned as in .pre-commit-config.yaml
        'bench': ['matplotlib>=3.5'],
        'onnx': ['onnxruntime>=1.16', 'onnx>=1.14'],  # tools/export.py --format onnx, reading .onnx exports
    },
)
