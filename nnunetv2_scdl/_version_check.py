"""Fail early, and say why, when the installed nnU-Net is not the release series this package was written against."""
from importlib.metadata import PackageNotFoundError, version

SUPPORTED_NNUNET = (2, 8)  # major, minor: nnunetv2>=2.8,<2.9


def _major_minor(version_string: str) -> tuple:
    parts = version_string.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ImportError(f"nnunetv2_scdl cannot parse the installed nnunetv2 version {version_string!r}.") from None


def check_nnunet_version(installed: str = None) -> None:
    """Raise ImportError unless nnunetv2 2.8.x is installed.

    ``installed`` overrides the version read from the environment (for tests).
    """
    if installed is None:
        try:
            installed = version("nnunetv2")
        except PackageNotFoundError:
            raise ImportError("nnunetv2_scdl needs nnunetv2>=2.8,<2.9, but nnunetv2 is not installed. "
                              "Run: pip install 'nnunetv2>=2.8,<2.9'") from None
    if _major_minor(installed) != SUPPORTED_NNUNET:
        raise ImportError(
            f"nnunetv2_scdl supports nnunetv2>=2.8,<2.9, but nnunetv2 {installed} is installed. nnU-Net 2.8 is the "
            f"first release that loads external trainers (nnUNet_extTrainer), and its trainer API differs from other "
            f"releases. Run: pip install 'nnunetv2>=2.8,<2.9'")
