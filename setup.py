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
    package_data={
        'strhub': [
            'data/wordlist.txt',
            'data/wordlist_el.txt',
            'pretrained/*.ckpt',
            'pretrained/README.md',
            'serve/static/*',
        ]
    },
    install_requires=requirements,
    extras_require={
        # ruff pinned as in .pre-commit-config.yaml; selenium drives Chromium in tests/test_serve_browser.py
        'test': ['pytest>=7', 'ruff==0.17.6', 'matplotlib>=3.5', 'selenium>=4.11'],
        'bench': ['matplotlib>=3.5'],
        'onnx': ['onnxruntime>=1.16', 'onnx>=1.14'],  # tools/export.py --format onnx, reading .onnx exports
        # tools/serve.py; Starlette 0.40 for form(max_part_size=), python-multipart 0.0.18 for its DoS fixes
        'serve': ['fastapi>=0.115.3', 'starlette>=0.40', 'uvicorn>=0.30', 'python-multipart>=0.0.18'],
    },
)
